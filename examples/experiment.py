#!/usr/bin/env python3
"""A tiny experiment: a noisy quadratic bowl.

Reads its parameters from the command line and prints its metrics as one
JSON object on standard output, which tally stores as columns.
"""
import argparse
import json
import math
import random

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--depth", type=int, required=True)
parser.add_argument("--seed", type=int, required=True)
args = parser.parse_args()

rng = random.Random(args.seed * 1_000_003 + args.depth)
loss = (math.log10(args.lr) + 2.0) ** 2 + 0.1 * args.depth + rng.uniform(0, 0.05)
print(json.dumps({"loss": round(loss, 6), "accuracy": round(1.0 / (1.0 + loss), 6)}))
