"""LXMERT VQA model, modality structure, debiasing objectives and stage 1 (see DESIGN.md §4)."""
