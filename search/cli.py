"""`tickets`: the one command over the data, model, pruning and search stages.

Exit codes: 0 ok, 2 bad input (one line on stderr naming the file, field or value), 1 failure.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from vqa.errors import InputError

# -h as well as --help on every command (click passes it down to sub-commands).
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    help="Search sparse and robust LXMERT subnetworks for out-of-distribution VQA.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
)
data_app = typer.Typer(
    help="Datasets: synthesise, convert features, prepare the cache, report.",
    no_args_is_help=True,
    context_settings=CONTEXT,
)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"tickets {version('tickets')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass  # the top command's own options; its help is the Typer's


Overrides = Annotated[
    list[str] | None, typer.Argument(help="key=value overrides, e.g. data.selection_seed=1")
]


def bad_input_exits_2(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an `InputError` into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@data_app.command("synth")
@bad_input_exits_2
def synth(
    out: Annotated[Path, typer.Argument(help="Directory to write the benchmark into.")],
    dataset: Annotated[
        Literal["vqacp_v2", "vqavs"], typer.Option(help="Whose files to write.")
    ] = "vqacp_v2",
    questions: Annotated[
        int, typer.Option(help="Training questions (pretrain: as many; test: see --test-fraction).")
    ] = 3000,
    images: Annotated[
        int, typer.Option(help="Images (8 questions each at most; 4 in pretrain if types: half).")
    ] = 1200,
    feature_dim: Annotated[int, typer.Option(help="Region feature dimension D.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    answer_boxes: Annotated[
        int, typer.Option(help="Boxes per question type carrying its answer.")
    ] = 3,
    noise: Annotated[float, typer.Option(help="Std of the noise on every box feature.")] = 0.5,
    answer_strength: Annotated[
        float,
        typer.Option(help="Scale of a box's answer code against its type code (1: equal)."),
    ] = 1.0,
    answer_hops: Annotated[
        int,
        typer.Option(
            help="1: a type's boxes hold its answer; 2: they hold a link, and the answer sits in "
            "other boxes with the same link (the visual encoder must relate boxes)."
        ),
    ] = 1,
    link_codes: Annotated[
        int,
        typer.Option(
            help="With --answer-hops 2: 0 (a fresh random link per image and type), or n >= 8 "
            "fixed link codes each image draws its links from."
        ),
    ] = 0,
    answer_code: Annotated[
        Literal["dense", "product"],
        typer.Option(
            help="dense: a box holds code(type) + code(answer); product: its thirds hold "
            "code(type), code(answer) * r and r for a fresh sign vector r per box, so only their "
            "elementwise product, computed per box by the visual encoder, gives the answer."
        ),
    ] = "dense",
    answer_clue: Annotated[
        float,
        typer.Option(
            help="With --answer-code product: scale of a dense answer code added to the box, "
            "readable without the product (0: none)."
        ),
    ] = 0.0,
    answer_variants: Annotated[
        int,
        typer.Option(
            help="With --answer-code product: sign codes per answer, one drawn per box (its "
            "object class stays the answer's), so the visual encoder decodes many appearances "
            "onto each answer."
        ),
    ] = 1,
    nuisance: Annotated[
        float,
        typer.Option(
            help="Scale of a nuisance direction shared by every box with a gain drawn per box "
            "in [0, 2] (0: none); the visual projection must null it out."
        ),
    ] = 0.0,
    feature_mixing: Annotated[
        float,
        typer.Option(
            help="0 to 1: how far every box feature is rotated by one fixed random rotation "
            "(1: fully), so the codes are dense mixes of all coordinates, as region features are."
        ),
    ] = 0.0,
    yesno: Annotated[
        Literal["read", "verify"],
        typer.Option(
            help="How yes/no boxes give the answer: read (they show yes or no) or verify (they "
            "show one of the type's keywords; yes when it is the asked one)."
        ),
    ] = "read",
    bias: Annotated[
        float, typer.Option(help="Share of answers that follow the planted shortcut.")
    ] = 0.8,
    test_answers: Annotated[
        Literal["spread", "one"],
        typer.Option(
            help="VQA-CP test bias: spread (over every answer but the training-dominant one) "
            "or one (a single other answer, which rewards guessing against the prior)."
        ),
    ] = "spread",
    train_prior: Annotated[
        Literal["dominant", "longtail"],
        typer.Option(
            help="VQA-CP training prior per question type: dominant (the bias share on one "
            "answer) or longtail (shares halving down a random order; test reverses it)."
        ),
    ] = "dominant",
    test_fraction: Annotated[
        float, typer.Option(help="Test questions per training question (VQA-CP dev: 20% of them).")
    ] = 0.5,
    pretrain_types: Annotated[
        Literal["all", "half"],
        typer.Option(
            help="Question types the balanced pretrain split asks: all, or half (every other "
            "type), so that stage 1 has types of its own to learn."
        ),
    ] = "all",
) -> None:
    """Write a synthetic VQA-CP v2 or VQA-VS benchmark in the real file formats."""
    from vqa.synth import SynthSpec, generate

    spec = SynthSpec(
        dataset=dataset,
        questions=questions,
        images=images,
        feature_dim=feature_dim,
        seed=seed,
        answer_boxes=answer_boxes,
        noise=noise,
        answer_strength=answer_strength,
        answer_hops=answer_hops,
        link_codes=link_codes,
        answer_code=answer_code,
        answer_clue=answer_clue,
        answer_variants=answer_variants,
        nuisance=nuisance,
        feature_mixing=feature_mixing,
        yesno=yesno,
        bias=bias,
        test_answers=test_answers,
        train_prior=train_prior,
        test_fraction=test_fraction,
        pretrain_types=pretrain_types,
    )
    meta = generate(spec, out)
    sizes = ", ".join(f"{k} {v}" for k, v in meta["splits"].items())
    typer.echo(f"wrote {out} ({dataset}: {sizes} questions)")
    typer.echo(f"next: tickets data prepare {out / 'prepare.yaml'}")


@data_app.command("prepare")
@bad_input_exits_2
def prepare_cmd(
    config: Annotated[Path, typer.Argument(help="YAML run config with a data: block.")],
    overrides: Overrides = None,
) -> None:
    """Read the questions, annotations and features and write the data cache."""
    from search.config import load_config
    from vqa.prepare import prepare

    cfg = load_config(config, overrides)
    result = prepare(cfg.data, progress=sys.stderr.isatty())
    state = "written" if result.written else "up to date, nothing to do"
    sizes = ", ".join(f"{k} {v}" for k, v in result.splits.items())
    typer.echo(f"cache {result.cache_dir}: {state} ({sizes})")
    if result.unk_share:
        shares = ", ".join(f"{k} {v:.1%}" for k, v in result.unk_share.items())
        typer.echo(f"[UNK] share of question tokens: {shares}")


@data_app.command("report")
@bad_input_exits_2
def report_cmd(
    config: Annotated[Path, typer.Argument(help="YAML run config with a data: block.")],
    overrides: Overrides = None,
) -> None:
    """Print the prepared data and the prior-only baseline's accuracy per split."""
    from search.config import load_config
    from vqa.baseline import format_report
    from vqa.cache import load_cache

    cfg = load_config(config, overrides)
    typer.echo(format_report(load_cache(cfg.data.resolved().cache_dir)))


@data_app.command("convert-tsv")
@bad_input_exits_2
def convert_tsv_cmd(
    out: Annotated[Path, typer.Argument(help="HDF5 feature store to write.")],
    tsv: Annotated[list[Path], typer.Argument(help="trainval_36 or *_obj36.tsv files.")],
    format: Annotated[
        Literal["auto", "bottomup", "lxmert"],
        typer.Option("--format", help="TSV layout (auto: from the first line's field count)."),
    ] = "auto",
    dtype: Annotated[
        Literal["float16", "float32"], typer.Option(help="Stored feature dtype.")
    ] = "float16",
    num_boxes: Annotated[int | None, typer.Option(help="Expected boxes per image.")] = None,
) -> None:
    """Convert bottom-up (trainval_36) or LXMERT (*_obj36) TSV features into the HDF5 store."""
    from vqa.tsv import convert_tsv

    summary = convert_tsv(
        tsv,
        out,
        fmt=format,
        dtype=dtype,
        num_boxes=num_boxes,
        progress=sys.stderr.isatty(),
    )
    typer.echo(
        f"wrote {summary['out']}: {summary['images']} images x {summary['num_boxes']} boxes x "
        f"{summary['feature_dim']} ({summary['format']} TSV, {dtype})"
    )


def _train_stage(stage: str, config: Path, overrides: list[str] | None) -> None:
    from models.train import fit
    from search.config import load_config

    cfg = load_config(config, overrides)
    train_cfg = getattr(cfg, stage)
    if train_cfg is None:
        raise InputError(f"{config}: no '{stage}:' block (output_dir, epochs, ...)")
    if stage == "pretrain":
        objective, blocks = None, ("data", "pretrain")
    else:
        objective, blocks = cfg.objective, ("data", "model", "objective", "finetune")
    metrics = fit(stage, cfg.data, cfg.model, objective, train_cfg, cfg.blocks_yaml(*blocks),
                  progress=sys.stderr.isatty(), log=typer.echo)  # fmt: skip
    typer.echo(format_metrics(metrics))


def format_metrics(metrics: dict) -> str:
    """The kept model's accuracies, one line per split."""
    lines = [f"kept epoch {metrics['kept_epoch']}: {metrics['model_dir']}"]
    for name in [metrics["selection_split"], "test", "test_full"]:
        m = metrics["selection"] if name == metrics["selection_split"] else metrics.get(name)
        if m:
            parts = [f"{k} {m[k]:.2f}" for k in ("overall", "yes_no", "number", "other", "ood_mean")
                     if k in m]  # fmt: skip
            lines.append(f"  {name:<10} " + ", ".join(parts))
    return "\n".join(lines)


@app.command("pretrain")
@bad_input_exits_2
def pretrain_cmd(
    config: Annotated[
        Path, typer.Argument(help="YAML run config with data: and pretrain: blocks.")
    ],
    overrides: Overrides = None,
) -> None:
    """Pre-train a small LXMERT on the balanced split, loss `pretrain.loss` (default `ce`, as
    LXMERT's own QA pre-training; synthetic benchmark only)."""
    _train_stage("pretrain", config, overrides)


@app.command("finetune")
@bad_input_exits_2
def finetune_cmd(
    config: Annotated[
        Path, typer.Argument(help="YAML run config with data:, model:, objective:, finetune:.")
    ],
    overrides: Overrides = None,
) -> None:
    """Stage 1: fine-tune the whole model with loss L1 (objective.name), keep the best epoch."""
    _train_stage("finetune", config, overrides)


@app.command("prune")
@bad_input_exits_2
def prune_cmd(
    config: Annotated[
        Path, typer.Argument(help="YAML run config with data: and pruning: (and stage3:) blocks.")
    ],
    overrides: Overrides = None,
) -> None:
    """Stage 2 at one allocation: mask training with loss L2 (or OMP), then optional stage 3."""
    from pruning.train import prune
    from search.config import load_config

    cfg = load_config(config, overrides)
    if cfg.pruning is None:
        raise InputError(f"{config}: no 'pruning:' block (output_dir, sparsity, ...)")
    blocks = ("data", "pruning") + (("stage3",) if cfg.stage3 is not None else ())
    resolved = cfg.resolved()
    metrics = prune(resolved.data, resolved.pruning, resolved.stage3, cfg.blocks_yaml(*blocks),
                    progress=sys.stderr.isatty(), log=typer.echo,
                    device=resolved.model.device)  # fmt: skip
    typer.echo(format_prune_metrics(metrics))


def format_prune_metrics(metrics: dict) -> str:
    """Realised sparsities and the kept mask's (and stage 3's) accuracies."""
    report = metrics["sparsity"]
    parts = [f"{g} {report[g]['realised']:.4f}" for g in ("language", "visual", "cross", "overall")
             if g in report]  # fmt: skip
    lines = [f"realised sparsity: {', '.join(parts)}; {metrics['remaining_params']:,} weights kept"]
    lines.append(format_metrics({**metrics, "model_dir": metrics.get("method", "")}))
    if "stage3" in metrics:
        section = metrics["stage3"]
        lines.append("stage 3 " + format_metrics({**section, "model_dir": section["output_dir"]}))
    return "\n".join(lines)


@app.command("export")
@bad_input_exits_2
def export_cmd(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A finished `tickets prune` output directory, or with --trial a "
            "sweep's run directory."
        ),  # fmt: skip
    ],
    out_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="OUT",
            help="Directory to write (default RUN_DIR/export, or RUN_DIR/export-ID with --trial).",
            show_default=False,
        ),  # fmt: skip
    ] = None,
    trial: Annotated[
        str | None, typer.Option(help="A finished trial of the sweep (trial_id in trials.parquet).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="The same as OUT.")] = None,
) -> None:
    """Bake the kept mask into the weights: a plain `from_pretrained` directory plus the masks
    packed one bit per weight and the realised sparsity per module."""
    from pruning.export import export_pruned
    from pruning.train import load_pruned
    from search.config import load_config

    if out is not None and out_dir is not None and out != out_dir:
        raise InputError(f"export: OUT {out_dir} and --out {out} disagree; give one")
    out = out if out is not None else out_dir
    if trial is not None:
        from search.trial_export import export_trial

        target = out if out is not None else run_dir / f"export-{trial}"
        report = export_trial(run_dir, trial, target)
    else:
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            hint = " (a sweep? give --trial ID)" if (run_dir / "tickets.yaml").is_file() else ""
            raise InputError(f"{run_dir}: not a pruning run directory (no config.yaml){hint}")
        cfg = load_config(saved)
        if cfg.pruning is None:
            raise InputError(f"{saved}: no 'pruning:' block; not a pruning run")
        model, tokenizer, answers = load_pruned(cfg.pruning, cfg.stage3)
        target = out if out is not None else run_dir / "export"
        report = export_pruned(model, answers, tokenizer, saved.read_text(), target)
    parts = [f"{g} {report[g]['realised']:.4f}" for g in ("language", "visual", "cross", "overall")
             if g in report]  # fmt: skip
    typer.echo(f"wrote {target} (realised sparsity: {', '.join(parts)})")


@app.command("search")
@bad_input_exits_2
def search_cmd(
    config: Annotated[
        Path, typer.Argument(help="YAML run config with data:, pruning: and search: blocks.")
    ],
    overrides: Overrides = None,
    address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster (e.g. ray://head:10001, auto).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Run name (default search.name or a time).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the budgets, feasible intervals, uniform point, hyperparameters and "
            "planned trials (the grid's points); write and start nothing, Ray included.",
        ),
    ] = False,
) -> None:
    """Sweep allocations with Ray Tune: every trial is one stage-2 run at one proposal.

    Exit 0 when the sweep ends (a line names any failed trials), 1 when every trial failed,
    130 on Ctrl-C (the last line says how to resume), 2 on bad input."""
    from search.config import load_config

    cfg = load_config(config, overrides)
    if dry_run:  # before search.tuner is imported: it imports Ray
        from search.dry_run import dry_run as plan_text

        typer.echo(plan_text(cfg, name, address))
        return
    from search.tuner import planned_run_dir, run_search, sweep_name

    name = sweep_name(cfg, name)
    _sweep_command(lambda: run_search(cfg, name, address, echo=typer.echo),
                   planned_run_dir(cfg, name))  # fmt: skip


@app.command("resume")
@bad_input_exits_2
def resume_cmd(
    run_dir: Annotated[
        str,
        typer.Argument(
            help="The run directory of a sweep, or its URI on remote storage "
            "(s3://.../NAME: its run files are fetched into ./runs/NAME)."
        ),
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="search.num_samples=N: extend the sweep to N trials (the only one)."),
    ] = None,
    address: Annotated[str | None, typer.Option(help="Join this Ray cluster.")] = None,
) -> None:
    """Continue an interrupted sweep: finished trials are kept, running ones continue; a finished
    one is only reported, or grown with search.num_samples=N. Exit codes as `tickets search`."""
    from search.config import parse_override
    from search.remote import local_run_dir
    from search.tuner import resume_search

    run_dir = local_run_dir(run_dir)
    num_samples = None
    for text in overrides or []:
        parts, value = parse_override(text)
        if parts != ["search", "num_samples"] or not isinstance(value, int) or value < 1:
            raise InputError(f"override '{text}': a resume takes only search.num_samples=N "
                             "(a positive integer)")  # fmt: skip
        num_samples = value
    _sweep_command(lambda: resume_search(run_dir, address, echo=typer.echo,
                                         num_samples=num_samples), run_dir)  # fmt: skip


def _sweep_command(run: Callable[[], Path], run_dir: Path) -> None:
    """Run a sweep command and end it with the sweep's exit code and closing lines."""
    from search.driver import DRIVER_FILE, mark_ended, owns
    from search.tuner import sweep_outcome

    try:
        run()
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside Tune's loop
        if not (run_dir / DRIVER_FILE).is_file():
            typer.echo("interrupted before the sweep started; nothing was written")
        else:
            if owns(run_dir):  # not a finished sweep whose resume was cut before it began
                mark_ended(run_dir, "interrupted")
            typer.echo(f"interrupted; continue with: tickets resume {run_dir}")
        raise typer.Exit(130) from None
    if not (run_dir / DRIVER_FILE).is_file():
        return  # e.g. a finished sweep that predates driver.json, reported and left alone
    result = sweep_outcome(run_dir)
    for line in result.lines(run_dir):
        typer.echo(line)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command("results")
@bad_input_exits_2
def results_cmd(
    run_dir: Annotated[
        str, typer.Argument(help="A sweep's run directory (finished or not), or its URI.")
    ],
) -> None:
    """Rewrite trials.parquet and epochs.parquet from the experiment state and print the best."""
    from search.remote import local_run_dir
    from search.run_files import best_trials_text, collect, load_run

    run_dir = local_run_dir(run_dir)
    trials, epochs = collect(run_dir)
    typer.echo(best_trials_text(load_run(run_dir), trials))
    typer.echo(f"wrote {run_dir / 'trials.parquet'} ({len(trials)} trials), "
               f"{run_dir / 'epochs.parquet'} ({len(epochs)} epochs)")  # fmt: skip


@app.command("status")
@bad_input_exits_2
def status_cmd(
    run_dir: Annotated[
        str,
        typer.Argument(
            help="A sweep's run directory (running, interrupted or finished), or its "
            "URI on remote storage."
        ),
    ],
    top: Annotated[int, typer.Option(help="How many of the best trials to list.")] = 5,
) -> None:
    """Where a sweep stands: trials by status, the best so far, trial-epochs spent, time left.
    Reads the run directory only (no Ray), so it works from another shell while the sweep runs."""
    from search.remote import local_run_dir
    from search.status import status_text

    typer.echo(status_text(local_run_dir(run_dir), top))


@app.command("doctor")
@bad_input_exits_2
def doctor_cmd(
    config: Annotated[
        Path | None, typer.Argument(help="Also check this run config's data, checkpoint, search.")
    ] = None,
    overrides: Overrides = None,
    address: Annotated[
        str | None, typer.Option(help="Check this Ray cluster (default RAY_ADDRESS): HEAD:6379.")
    ] = None,
) -> None:
    """Check torch, CUDA, Ray and the resources here or on a cluster, and with a CONFIG whether
    its data cache, checkpoint, trial resources and storage are usable. One line per check.

    Exit 0 when nothing FAILs, 1 when a check fails, 2 on bad input or an unreachable cluster."""
    from search.config import load_config
    from search.doctor import run_doctor

    cfg = load_config(config, overrides) if config is not None else None
    if run_doctor(cfg, address, echo=typer.echo):
        raise typer.Exit(1)


@app.command("pareto")
@bad_input_exits_2
def pareto_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A sweep's run directory (finished or not).")],
    objectives: Annotated[
        str,
        typer.Option(
            help="Two or three COLUMN:max|min of trials.parquet, comma-separated; "
            "ood and params are short names (README). Selection metrics by default: the test "
            "metrics of the front are shown beside them."
        ),  # fmt: skip
    ] = "sel_overall:max,remaining_params:min",
    color: Annotated[
        str | None,
        typer.Option(
            help="Column colouring the allocation map, allocation_COL.png "
            "(default: the first objective)."
        ),  # fmt: skip
    ] = None,
    include_early_stopped: Annotated[
        bool, typer.Option(help="Also consider trials that ASHA stopped early.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Directory to write the files into (default: RUN_DIR).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the files of an earlier report in the output directory.")
    ] = False,
) -> None:
    """The non-dominated trials: a table, pareto.parquet, the front (pareto.png) and the
    allocation map per budget (allocation_COL.png), recorded in pareto.json."""
    from search.pareto import pareto_report, parse_objectives

    _, text, paths = pareto_report(run_dir, parse_objectives(objectives), color,
                                   include_early_stopped, out=out, overwrite=overwrite)  # fmt: skip
    typer.echo(text)
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


@app.command("demo")
@bad_input_exits_2
def demo_cmd(
    out: Annotated[Path, typer.Option(help="Working directory of the demo.")] = Path(
        "tickets_demo"
    ),
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic benchmark.")] = 0,
    questions: Annotated[int, typer.Option(help="Training questions of the benchmark.")] = 3000,
    overrides: Overrides = None,
) -> None:
    """Run the pipeline on the embedded synthetic benchmark (CPU, minutes).

    synth -> prepare -> data report -> pre-training -> stage 1 (LPF); overrides such as
    finetune.epochs=2 apply to the demo's run config, saved as OUT/demo.yaml.
    """
    from search.demo import run_demo

    run_demo(out, seed=seed, questions=questions, overrides=overrides, echo=typer.echo,
             progress=sys.stderr.isatty())  # fmt: skip
