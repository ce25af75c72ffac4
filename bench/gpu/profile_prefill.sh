set -u
R=$PWD
mkdir -p /tmp/b && tar -xzf bundle.tar.gz -C /tmp/b && cd /tmp/b/bundle
cfg=$R/bench/configs/llama-3.1-8b.json
ids=$(python3 -c "import random; random.seed(2); print(','.join(str(random.randrange(1000, 120000)) for _ in range(8192)))")
timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw --launch-count 420 ./run.sh sieve --log-level warn generate --device cuda --model $cfg --load-format dummy --enforce-eager --max-num-batched-tokens 8192 --prompt-token-ids "$ids" --max-tokens 1 --ignore-eos > $OUT/ncu_prefill.csv 2> $OUT/ncu_prefill.err
python3 - $OUT/ncu_prefill.csv <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
header = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
names = rows[header]; k, t = names.index("Kernel Name"), names.index("gpu__time_duration.sum")
by = collections.defaultdict(lambda: [0, 0.0]); total = 0.0
for r in rows[header + 2:]:
    try: ns = float(r[t].replace(",", ""))
    except ValueError: continue
    name = r[k].split("(")[0][:80]; by[name][0] += 1; by[name][1] += ns; total += ns
print(f"{len(rows)-header-2} kernels, {total / 1e6:.3f} ms")
for name, (n, ns) in sorted(by.items(), key=lambda x: -x[1][1])[:14]:
    print(f"{ns / 1e6:8.3f} ms {n:5d}x  {name}")
PY
tail -3 $OUT/ncu_prefill.err
