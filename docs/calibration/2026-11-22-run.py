"""One calibration experiment: data spec + pretrain + stage-1 (bce, lmh) for one seed, plus
image dependence of the kept models and an anti-prior reference. Prints one JSON line."""
import json, sys, time, hashlib
from collections import Counter
from pathlib import Path
import numpy as np, torch, yaml
torch.set_num_threads(1)
from models.train import fit, load_checkpoint_model
from models.objectives import predict as argmax
from search.config import validate_config
from tests.conftest import make_bench
from vqa.baseline import evaluate_predictions
from vqa.cache import load_cache
from vqa.metric import normalize_answer

args = json.loads(sys.argv[1])
seed = args["seed"]
spec = {"dataset": "vqacp_v2", "seed": seed, **args.get("spec", {})}
pre = {"epochs": 8, "batch_size": 64, "lr": 1e-3, **args.get("pretrain", {})}
ft = {"epochs": 6, "batch_size": 64, "lr": 5e-4, "eval_train": True, **args.get("finetune", {})}
key = lambda d: hashlib.md5(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
root = Path("/tmp/exp/runs") / f"d{key(spec)}"
t0 = time.time()
if not (root / "data" / "synth.json").is_file() or json.loads((root/"data"/"synth.json").read_text())["spec"] != {**json.loads((root/"data"/"synth.json").read_text())["spec"], **spec}:
    bench = make_bench(root / "data", **spec)
raw = yaml.safe_load((root / "data" / "prepare.yaml").read_text())
pdir = root / f"pre{key(pre)}"
raw["pretrain"] = {"output_dir": str(pdir), "seed": seed, **pre}
raw["model"] = {"checkpoint": str(pdir / "model")}
cfg = validate_config(raw, "calib")
pm = fit("pretrain", cfg.data, cfg.model, None, cfg.pretrain, cfg.blocks_yaml("data", "pretrain"))
t1 = time.time()
data = load_cache(cfg.data.resolved().cache_dir)
test = data.split("test")

def preds(model, split, noise):
    out = []
    g = torch.Generator().manual_seed(123)
    allf = data.store.gather(split.feature_rows[np.arange(len(split))])[0]
    mu, sd = float(allf.mean()), float(allf.std())
    model.eval()
    with torch.no_grad():
        for i in range(0, len(split), 512):
            b = data.make_batch(split, np.arange(i, min(i + 512, len(split))))
            f = b.visual_feats
            if noise:
                f = mu + sd * torch.randn(f.shape, generator=g)
            logits, _ = model(b.input_ids, b.attention_mask, f, b.visual_pos)
            out += argmax(logits).tolist()
    return out

def imgdep(mdir):
    model, _ = load_checkpoint_model(Path(mdir), data, "required")
    a, b = preds(model, test, False), preds(model, test, True)
    return round(100 * float(np.mean(np.array(a) != np.array(b))), 1)

ckpt = pdir / "model"
if args.get("headshift"):
    import shutil
    from safetensors.torch import save_file
    sdir = pdir / "model_shift"
    if not sdir.is_dir():
        model, _ = load_checkpoint_model(ckpt, data, "required")
        model.eval(); ps = data.split("pretrain"); lse = []
        with torch.no_grad():
            for i in range(0, len(ps), 512):
                b = data.make_batch(ps, np.arange(i, min(i + 512, len(ps))))
                lg, _ = model(b.input_ids, b.attention_mask, b.visual_feats, b.visual_pos)
                lse.append(torch.logsumexp(lg, -1))
        c = float(torch.cat(lse).mean())
        shutil.copytree(ckpt, sdir)
        st = {k: v.detach().clone().contiguous() for k, v in model.head.state_dict().items()}
        st["3.bias"] = st["3.bias"] - c
        save_file(st, str(sdir / "answer_head.safetensors"))
        print("shift", c)
    ckpt = sdir
    raw["model"] = {"checkpoint": str(ckpt)}
if args.get("fresh_head"):
    raw["model"] = {"checkpoint": str(ckpt), "reuse_answer_head": False}
import os
if args.get("obj_lr"): os.environ["CALIB_OBJ_LR"] = str(args["obj_lr"])
res = {"args": args, "pre": {"test": round(pm["test"]["overall"], 1), "loss": round(pm["history"][-1]["train_loss"], 3), "imgdep": imgdep(pdir / "model")}}
for loss in ("bce", "lmh"):
    fdir = root / f"ft{key(pre)}_{key(ft)}_{'hs' if args.get('headshift') else ''}{'fh' if args.get('fresh_head') else ''}{'olr'+str(args['obj_lr']) if args.get('obj_lr') and loss == 'lmh' else ''}{loss}"
    raw_ft = {**raw, "objective": {"name": loss}, "finetune": {"output_dir": str(fdir), "seed": seed, **ft}}
    c = validate_config(raw_ft, "calib")
    m = fit("finetune", c.data, c.model, c.objective, c.finetune, c.blocks_yaml("data", "model", "objective", "finetune"))
    res[loss] = {"ID": round(m["train"]["overall"], 1), "OOD": round(m["test"]["overall"], 1),
                 "ep": m["kept_epoch"], "dev": [round(h["selection"]["overall"], 1) for h in m["history"]],
                 "imgdep": imgdep(fdir / "best"),
                 "ood_by": {k: round(m["test"][k], 1) for k in ("yes_no", "number", "other")}}
# anti-prior reference: per type, each non-dominant training answer; mean and best over choices
import pyarrow.parquet as pq
tb = pq.read_table(data.dir / "questions" / "train.parquet", columns=["question_type", "multiple_choice_answer"])
cnt = {}
for q, a in zip(tb.column("question_type").to_pylist(), tb.column("multiple_choice_answer").to_pylist()):
    cnt.setdefault(q, Counter())[normalize_answer(a)] += 1
qts = list(test.question_types)
def acc_of(choice):  # choice: type -> answer
    return evaluate_predictions(data, test, [choice[t] for t in qts])["overall"]
# per-type accuracies of each candidate; types independent so combine per type
per_type = {}
for t, c in cnt.items():
    dom = c.most_common(1)[0][0]
    idx = [i for i, q in enumerate(qts) if q == t]
    sub = {}
    for a in c:
        if a == dom: continue
        pr = {q: (a if q == t else "__none__") for q in set(qts)}
        sub[a] = acc_of(pr) * len(qts) / max(1, len(idx))
    per_type[t] = (len(idx), sub, c)
n = len(qts)
mean_ref = sum(k * np.mean(list(s.values())) for k, s, _ in per_type.values()) / n
best_ref = sum(k * max(s.values()) for k, s, _ in per_type.values()) / n
# "most frequent non-dominant training answer" (ties alphabetical)
freq_ref = sum(k * s[min(((a, -c[a]) for a in s), key=lambda x: (x[1], x[0]))[0]] for k, s, c in per_type.values()) / n
res["antiprior"] = {"mean": round(mean_ref, 1), "best": round(best_ref, 1), "freq": round(freq_ref, 1)}
res["secs"] = {"pre": round(t1 - t0), "total": round(time.time() - t0)}
print("RESULT " + json.dumps(res), flush=True)
