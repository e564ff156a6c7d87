#!/usr/bin/env python3
"""Independent reference for relvqa's reliability metrics (src/metrics/).

Written to be obviously right rather than fast: every metric is recomputed from scratch at every
candidate threshold (O(n^2)), with no running sums, no tie-group bookkeeping shared with the Rust
code, and Python 3 stdlib only. tests/metrics.rs compares the two on random data within 1e-9.

Usage:
  metrics_reference.py TEST.jsonl [--val VAL.jsonl] [--conf-field conf] [--acc-field acc]
  metrics_reference.py --selftest

Each input line is a JSON object; the confidence and accuracy are read from --conf-field and
--acc-field (default "conf" and "acc"), so a predictions.jsonl with e.g. "maxprob", "selector"
and "acc" fields can be scored directly. A boolean accuracy counts as 1/0. Phi_c thresholds are
chosen on --val and applied to TEST; without --val, TEST doubles as val (an optimistic Phi).

Definitions (see the doc comments in src/metrics/ for the reasons):
  answered iff conf >= threshold; coverage = answered/N; risk = mean(1 - acc) over answered.
  curve: one point per distinct confidence, descending.
  AUC: trapezoid over positions p = 1..N (coverage p/N), where the risk at a position inside a
       tie group is its mean over all orders of the group (= reliable_vqa's AUC averaged over
       orders of tied questions).
  C@R: max coverage over distinct-confidence thresholds with risk <= R + 1e-12; else no
       threshold, coverage 0, risk 0.
  Phi_c: mean over all N of (acc if answered and acc > 0; -c if answered and acc == 0; 0).
       Best threshold: over distinct confidences plus abstain-all (None); max Phi, ties within
       1e-9 go to the larger coverage.
  ECE: 10 bins, bin = min(floor(10 * conf), 9); sum (count/N) * |mean acc - mean conf|.

Output: one JSON object {"summary": {...}, "degenerate": [...], "phi": {"1": {...}, ...}}.
"""

import argparse
import itertools
import json
import math
import random
import sys

RISKS_PERCENT = [1, 5, 10, 20]
PHI_COSTS = [1.0, 10.0, 100.0]
RISK_SLACK = 1e-12
PHI_TIE_SLACK = 1e-9
ECE_BINS = 10


class InputError(Exception):
    pass


def read_jsonl(path, conf_field, acc_field):
    conf, acc = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            for field in (conf_field, acc_field):
                if row.get(field) is None:
                    raise InputError(f"{path}:{lineno}: no field {field!r}")
            a = row[acc_field]
            conf.append(float(row[conf_field]))
            acc.append(1.0 if a is True else 0.0 if a is False else float(a))
    return conf, acc


def validate(conf, acc):
    if len(conf) != len(acc):
        raise InputError(f"{len(conf)} confidences but {len(acc)} accuracies")
    if not acc:
        raise InputError("empty split: no questions to score")
    for i, (c, a) in enumerate(zip(conf, acc)):
        if not math.isfinite(c):
            raise InputError(f"confidence of question {i} is {c}")
        if not (0.0 <= a <= 1.0):
            raise InputError(f"accuracy of question {i} is {a}")


def answered_set(conf, threshold):
    if threshold is None:
        return []
    return [i for i, c in enumerate(conf) if c >= threshold]


def risk_of(acc, idx):
    if not idx:
        return 0.0
    return sum(1.0 - acc[i] for i in idx) / len(idx)


def distinct_desc(conf):
    return sorted(set(conf), reverse=True)


def curve(conf, acc):
    n = len(conf)
    out = []
    for t in distinct_desc(conf):
        idx = answered_set(conf, t)
        out.append({"threshold": t, "coverage": len(idx) / n, "risk": risk_of(acc, idx)})
    return out


def expected_risk_at(conf, acc, p):
    """Mean risk over tie orders after answering the p most confident questions."""
    v = sorted(conf, reverse=True)[p - 1]
    above = [i for i, c in enumerate(conf) if c > v]
    group = [i for i, c in enumerate(conf) if c == v]
    j = p - len(above)
    group_mean_err = sum(1.0 - acc[i] for i in group) / len(group)
    return (sum(1.0 - acc[i] for i in above) + j * group_mean_err) / p


def auc(conf, acc):
    n = len(conf)
    risks = [expected_risk_at(conf, acc, p) for p in range(1, n + 1)]
    return sum((risks[k] + risks[k + 1]) / 2.0 / n for k in range(n - 1))


def coverage_at_risk(conf, acc, target):
    n = len(conf)
    best = {"threshold": None, "coverage": 0.0, "risk": 0.0}
    for t in distinct_desc(conf):
        idx = answered_set(conf, t)
        r = risk_of(acc, idx)
        if r <= target + RISK_SLACK and len(idx) / n > best["coverage"]:
            best = {"threshold": t, "coverage": len(idx) / n, "risk": r}
    return best


def ece(conf, acc):
    for i, c in enumerate(conf):
        if not (0.0 <= c <= 1.0):
            raise InputError(f"confidence of question {i} is {c}; ECE needs [0, 1]")
    n = len(conf)
    total = 0.0
    for b in range(ECE_BINS):
        members = [i for i, c in enumerate(conf) if min(int(c * ECE_BINS), ECE_BINS - 1) == b]
        if members:
            mean_acc = sum(acc[i] for i in members) / len(members)
            mean_conf = sum(conf[i] for i in members) / len(members)
            total += len(members) / n * abs(mean_acc - mean_conf)
    return total


def phi(conf, acc, threshold, c):
    idx = answered_set(conf, threshold)
    return sum(acc[i] if acc[i] > 0 else -c for i in idx) / len(conf)


def best_phi_threshold(conf, acc, c):
    candidates = [None] + distinct_desc(conf)
    scored = [(t, phi(conf, acc, t, c), len(answered_set(conf, t))) for t in candidates]
    top = max(p for _, p, _ in scored)
    near = [s for s in scored if s[1] >= top - PHI_TIE_SLACK]
    t, p, _ = max(near, key=lambda s: s[2])
    return t, p


def phi_report(val_conf, val_acc, test_conf, test_acc, c):
    t, val_phi = best_phi_threshold(val_conf, val_acc, c)
    return {
        "c": c,
        "threshold": t,
        "val_phi": val_phi,
        "phi": phi(test_conf, test_acc, t, c),
        "best_possible": sum(a for a in test_acc if a > 0) / len(test_acc),
        "no_abstention": sum(a if a > 0 else -c for a in test_acc) / len(test_acc),
    }


def degenerate(conf, acc):
    flags = []
    if all(a == 1.0 for a in acc):
        flags.append("all_right")
    elif all(a == 0.0 for a in acc):
        flags.append("all_wrong")
    if len(set(conf)) == 1:
        flags.append("one_tie_group")
    if len(acc) == 1:
        flags.append("one_question")
    return flags


def report(test_conf, test_acc, val_conf, val_acc):
    validate(test_conf, test_acc)
    validate(val_conf, val_acc)
    summary = {
        "n": len(test_conf),
        "accuracy": sum(test_acc) / len(test_acc),
        "auc": auc(test_conf, test_acc),
        "coverage_at_risk": {
            str(r): coverage_at_risk(test_conf, test_acc, r / 100.0) for r in RISKS_PERCENT
        },
        "ece": ece(test_conf, test_acc),
        "curve": curve(test_conf, test_acc),
    }
    return {
        "summary": summary,
        "degenerate": degenerate(test_conf, test_acc),
        "phi": {
            str(int(c)): phi_report(val_conf, val_acc, test_conf, test_acc, c) for c in PHI_COSTS
        },
    }


def ordered_auc(errs):
    """reliable_vqa's AUC for one fixed order: trapezoid over per-question points."""
    n = len(errs)
    risks = [sum(errs[: i + 1]) / (i + 1) for i in range(n)]
    return sum((risks[k] + risks[k + 1]) / 2.0 / n for k in range(n - 1))


def selftest():
    """Check the tie-aware AUC against the mean of reliable_vqa's over every order of ties."""
    rng = random.Random(7)
    for trial in range(200):
        n = rng.randint(1, 7)
        conf = [rng.choice([0.1, 0.4, 0.4, 0.8]) for _ in range(n)]
        acc = [rng.choice([0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]) for _ in range(n)]
        # Every order consistent with descending confidence: permute, keep the sorted ones.
        orders = [
            p for p in itertools.permutations(range(n))
            if all(conf[p[k]] >= conf[p[k + 1]] for k in range(n - 1))
        ]
        mean = sum(ordered_auc([1.0 - acc[i] for i in p]) for p in orders) / len(orders)
        got = auc(conf, acc)
        if abs(got - mean) > 1e-12:
            print(f"selftest failed at trial {trial}: {got} vs {mean}", file=sys.stderr)
            return 1
    print(json.dumps({"selftest": "ok", "trials": 200}))
    return 0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("test", nargs="?", help="JSON lines to score")
    ap.add_argument("--val", help="JSON lines to choose Phi thresholds on (default: TEST)")
    ap.add_argument("--conf-field", default="conf")
    ap.add_argument("--acc-field", default="acc")
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args(argv)
    if args.selftest:
        return selftest()
    if not args.test:
        ap.error("TEST is required unless --selftest")
    try:
        test_conf, test_acc = read_jsonl(args.test, args.conf_field, args.acc_field)
        if args.val:
            val_conf, val_acc = read_jsonl(args.val, args.conf_field, args.acc_field)
        else:
            val_conf, val_acc = test_conf, test_acc
        out = report(test_conf, test_acc, val_conf, val_acc)
    except (InputError, OSError, ValueError) as e:
        print(f"metrics_reference: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
