"""Text drift: Gyre's monitor against Evidently's embedding drift on the same embeddings (issue #11).

Data: generated English product reviews as the reference; current texts are either more reviews
(``same``: no drift expected) or a mix in which half the texts are German weather reports
(``drift``). Texts are embedded once with all-MiniLM-L6-v2 (``gyre_ml``); that time is reported
apart, since both sides need the same embeddings and Evidently is given exactly ours.

Measured, per scenario:

* ``embed``: sentence embeddings of reference + current texts (texts/s);
* ``gyre tests``: the monitor's text-feature drift on all rows: embedding drift (the domain
  classifier, :func:`gyre_monitor.domain.text_drift.embedding_drift`) plus the length, oov_share and
  empty descriptors (:class:`~gyre_monitor.domain.drift.PreparedReference` on a profile whose
  embeddings are all the reference rows);
* ``evidently method``: Evidently's default embedding drift method (``model``) on the same arrays;
* ``evidently report``: ``Report([EmbeddingsDrift])`` on the same arrays (the method plus the t-SNE
  picture every Evidently report draws);
* ``gyre deployed``: what the monitor does with its defaults: a profile keeping 1,000 reference
  embeddings (embedded at registration) and one window embedding at most 500 current texts,
  embedding included: the cost a window really pays.

Every row must give the same drift decision; the script exits non-zero if it cannot run or the
decisions differ. Sizes: default 2,000 reference x 2,000 current (embedding 10,000 x 10,000 takes
about 5 minutes on this 2-core machine); ``--full`` 10,000 x 10,000; ``--quick`` 400 x 400.

Usage: ``.venv/bin/python bench/text_drift.py [--quick | --full] [--rows N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from gyre_common.profile import MAX_EMBEDDING_ROWS, ReferenceProfile, text_feature_profile
from gyre_ml.encoders import shared_encoder
from gyre_monitor.domain.drift import DriftOptions, PreparedReference
from gyre_monitor.domain.text_drift import embedding_drift

RESULTS = Path(__file__).resolve().parent / "results"
ENCODER = "all-MiniLM-L6-v2"

PRODUCTS = ["parcel", "blender", "headset", "jacket", "lamp", "kettle", "charger", "backpack", "monitor",
            "keyboard", "toaster", "umbrella", "sofa", "camera", "printer", "drill"]
VERDICTS = ["arrived late", "works perfectly", "broke after a week", "is exactly as described",
            "was cheaper elsewhere", "feels sturdy", "smells odd", "exceeded my expectations",
            "stopped charging", "is too small", "looks great in the living room", "was missing a part"]
ENDINGS = ["would buy again", "not recommended", "five stars", "returned it", "customer service helped",
           "good value for money", "shipping was fast", "the box was damaged", ""]
CITIES = ["Berlin", "Hamburg", "München", "Köln", "Leipzig", "Dresden", "Bremen", "Stuttgart"]
WEATHER = ["sonnig", "bewölkt", "regnerisch", "windig", "neblig", "stürmisch"]


def reviews(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    texts = []
    for _ in range(n):
        end = rnd.choice(ENDINGS)
        texts.append(f"The {rnd.choice(PRODUCTS)} {rnd.choice(VERDICTS)}" + (f", {end}." if end else "."))
    return texts


def weather(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return [f"Das Wetter in {rnd.choice(CITIES)} ist heute {rnd.choice(WEATHER)} bei {rnd.randint(-5, 30)} Grad."
            for _ in range(n)]


def drifted(n: int, seed: int) -> list[str]:
    texts = reviews(n - n // 2, seed) + weather(n // 2, seed + 1)
    random.Random(seed + 2).shuffle(texts)
    return texts


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def evidently_method(reference: np.ndarray, current: np.ndarray) -> tuple[float, bool]:
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import model

    columns = [f"e{i}" for i in range(reference.shape[1])]
    score, detected, _ = model(bootstrap=reference.shape[0] < 1000)(
        pd.DataFrame(current, columns=columns), pd.DataFrame(reference, columns=columns))
    return float(score), bool(detected)


def evidently_report(reference: np.ndarray, current: np.ndarray) -> float:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift

    columns = [f"e{i}" for i in range(reference.shape[1])]
    definition = DataDefinition(embeddings={"text": columns})
    snapshot = Report([EmbeddingsDrift(embeddings_name="text")]).run(
        Dataset.from_pandas(pd.DataFrame(current, columns=columns), data_definition=definition),
        Dataset.from_pandas(pd.DataFrame(reference, columns=columns), data_definition=definition),
    )
    return float(snapshot.dict()["metrics"][0]["value"])


def scenario(name: str, reference_texts: list[str], current_texts: list[str]) -> dict[str, object]:
    encoder = shared_encoder(ENCODER)
    reference_emb, t_ref = timed(encoder.embed, reference_texts)
    current_emb, t_cur = timed(encoder.embed, current_texts)
    lookup = dict(zip(reference_texts, reference_emb, strict=True))

    # Gyre on all rows: the profile keeps every reference embedding (up to the profile's limit).
    sample = min(len(reference_texts), MAX_EMBEDDING_ROWS)
    feature, t_profile = timed(text_feature_profile, "review", reference_texts,
                               embed=lambda texts: np.stack([lookup[t] for t in texts]), embedding_sample=sample)
    prepared = PreparedReference(ReferenceProfile("bench", 1, (feature,), len(reference_texts)))
    current_lookup = dict(zip(current_texts, current_emb, strict=True))
    options = DriftOptions(max_embedded_texts=len(current_texts))
    drift, t_gyre = timed(prepared.detect, {"review": current_texts}, len(current_texts), options,
                          lambda _encoder, texts: np.stack([current_lookup[t] for t in texts]))
    by_check = {r.descriptor: r for r in drift.features}
    # The same function on exactly the arrays Evidently gets (all rows, stored float16 precision).
    stored_reference = reference_emb.astype(np.float16).astype(np.float32)
    ours, t_ours_method = timed(embedding_drift, stored_reference, current_emb)
    (ev_score, ev_drift), t_ev_method = timed(evidently_method, stored_reference, current_emb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev_report_score, t_ev_report = timed(evidently_report, stored_reference, current_emb)

    # Gyre as deployed: 1,000 reference embeddings embedded at registration, one 500-text window.
    started = time.perf_counter()
    deployed_feature = text_feature_profile("review", reference_texts, embed=encoder.embed)
    t_deployed_profile = time.perf_counter() - started
    deployed = PreparedReference(ReferenceProfile("bench", 1, (deployed_feature,), len(reference_texts)))
    window = current_texts[:500]
    deployed_drift, t_deployed_window = timed(deployed.detect, {"review": window}, len(window), DriftOptions(),
                                              lambda enc, texts: shared_encoder(enc).embed(texts))
    deployed_embedding = next(r for r in deployed_drift.features if r.descriptor == "embedding")

    result = {
        "scenario": name,
        "reference_rows": len(reference_texts),
        "current_rows": len(current_texts),
        "embed_s": t_ref + t_cur,
        "embed_texts_per_s": (len(reference_texts) + len(current_texts)) / (t_ref + t_cur),
        "gyre_profile_s": t_profile,
        "gyre_tests_s": t_gyre,
        "gyre_embedding_method_s": t_ours_method,
        "gyre_auc": by_check["embedding"].statistic,
        "gyre_embedding_drift": by_check["embedding"].drifted,
        "gyre_drifted_checks": drift.drifted_checks,
        "gyre_reference_embeddings": int(feature.text.embeddings.shape[0]) if feature.text else 0,
        "same_arrays_auc": ours.roc_auc,
        "evidently_method_s": t_ev_method,
        "evidently_auc": ev_score,
        "evidently_drift": ev_drift,
        "evidently_report_s": t_ev_report,
        "evidently_report_auc": ev_report_score,
        "deployed_profile_s": t_deployed_profile,
        "deployed_window_s": t_deployed_window,
        "deployed_auc": deployed_embedding.statistic,
        "deployed_drift": deployed_embedding.drifted,
    }
    result["same_decision"] = (ours.drifted == ev_drift == deployed_embedding.drifted
                               and (by_check["embedding"].drifted == ev_drift or sample < len(reference_texts)))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="400 x 400 texts")
    size.add_argument("--full", action="store_true", help="10,000 x 10,000 texts (minutes of embedding)")
    size.add_argument("--rows", type=int, help="reference and current texts each")
    args = parser.parse_args()
    rows = args.rows or (400 if args.quick else 10_000 if args.full else 2_000)
    print(f"text drift: {rows} reference x {rows} current texts, {ENCODER}, torch threads "
          f"{__import__('torch').get_num_threads()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs", flush=True)
    # Imports and the encoder load outside the timings.
    import evidently.legacy.metrics.data_drift.embedding_drift_methods
    import evidently.metrics  # noqa: F401
    import sklearn.linear_model  # noqa: F401

    shared_encoder(ENCODER).embed(["warm-up"])
    reference = reviews(rows, seed=1)
    results = [scenario("same", reference, reviews(rows, seed=2)), scenario("drift", reference, drifted(rows, seed=3))]
    header = (f"{'scenario':<9}{'embed s':>9}{'texts/s':>9}{'gyre tests s':>14}{'ev method s':>13}"
              f"{'ev report s':>13}{'AUC gyre':>10}{'AUC ev':>8}{'drift g/e':>11}{'window s':>10}")
    print(header)
    for r in results:
        print(f"{r['scenario']:<9}{r['embed_s']:>9.1f}{r['embed_texts_per_s']:>9.0f}{r['gyre_tests_s']:>14.2f}"
              f"{r['evidently_method_s']:>13.2f}{r['evidently_report_s']:>13.2f}{r['same_arrays_auc']:>10.4f}"
              f"{r['evidently_auc']:>8.4f}{str(r['gyre_embedding_drift'])[0] + '/' + str(r['evidently_drift'])[0]:>11}"
              f"{r['deployed_window_s']:>10.2f}")
        print(f"   gyre drifted checks: {r['gyre_drifted_checks']}; deployed (1,000 ref, 500-text window): "
              f"AUC {r['deployed_auc']:.4f}, drift {r['deployed_drift']}, window {r['deployed_window_s']:.1f} s "
              f"incl. embedding, profile {r['deployed_profile_s']:.1f} s")
        print(f"   ratios: evidently report / gyre tests {r['evidently_report_s'] / r['gyre_tests_s']:.2f}; "
              f"evidently method / gyre embedding method {r['evidently_method_s'] / r['gyre_embedding_method_s']:.2f}; "
              f"with embedding: {(r['embed_s'] + r['evidently_report_s']) / (r['embed_s'] + r['gyre_tests_s']):.2f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"text_drift-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"rows": rows, "results": results}, indent=2, default=str), encoding="utf-8")
    print(f"results: {out}")
    same = all(r["same_decision"] for r in results)
    expected = [r["evidently_drift"] for r in results] == [False, True]
    print(f"same decision as Evidently: {same}; expected decisions (same: no drift, drift: drift): {expected}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
