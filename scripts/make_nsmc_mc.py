"""A Korean multiple-choice set from NSMC movie reviews (CC0): the sentiment of a review, two
options (긍정 / 부정), the NSMC convention for labels (rating 9–10 positive, 1–4 negative).
1,000 items, 500 of each, reviews of 15–150 characters that appear nowhere in the default
model's corpus (data/text/*.jsonl), chosen with seed 0. Written in the BIG-bench JSONL format
`eval::tasks::load_bigbench` reads, with the review's NSMC id.

    python3 scripts/make_nsmc_mc.py ../shared/assets/corpora/ko_nsmc_reviews.tsv data/benchmarks/nsmc_sentiment_mc.jsonl
"""
import csv
import glob
import json
import random
import sys


def main():
    src, out = sys.argv[1:3]
    corpus = "\n".join(json.loads(l)["text"] for f in sorted(glob.glob("data/text/*.jsonl")) for l in open(f, encoding="utf-8"))
    pos, neg = [], []
    with open(src, encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            text = " ".join(row["review"].split())
            if not 15 <= len(text) <= 150 or text in corpus:
                continue
            rating = int(row["rating"])
            if rating >= 9:
                pos.append((row["review_id"], text))
            elif rating <= 4:
                neg.append((row["review_id"], text))
    rng = random.Random(0)
    items = [(r, 0) for r in rng.sample(pos, 500)] + [(r, 1) for r in rng.sample(neg, 500)]
    rng.shuffle(items)
    with open(out, "w", encoding="utf-8") as f:
        for i, ((rid, text), label) in enumerate(items):
            f.write(json.dumps({
                "task": "nsmc_sentiment", "idx": i, "review_id": int(rid),
                "input": f"다음 영화 리뷰에 담긴 감정으로 알맞은 것은?\n\n리뷰: {text}",
                "choices": ["긍정", "부정"], "label": label,
            }, ensure_ascii=False) + "\n")
    print(f"{len(items)} items ({len(pos)} positive and {len(neg)} negative candidates) -> {out}")


if __name__ == "__main__":
    main()
