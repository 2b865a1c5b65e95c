#!/usr/bin/env python3
"""Writes data/sample.lp.gz: one UTC day (2026-11-20) of minute readings of six
pollutants at three stations, in InfluxDB line protocol, seeded and
reproducible. Gaps are deliberate: a 20-minute outage (an invalid hour), a
missing hour, and one pollutant absent at one station for two hours."""
import gzip, math, random, sys
from datetime import datetime, timezone

out = sys.argv[1] if len(sys.argv) > 1 else "data/sample.lp.gz"
rng = random.Random(20261120)
stations = ["berlin-mitte", "hamburg-sternschanze", "muenchen-stachus"]
base = {"co": 0.4, "no2": 28.0, "o3": 35.0, "pm10": 22.0, "pm25": 13.0, "so2": 3.5}
day = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp())
lines = []
for si, st in enumerate(stations):
    for minute in range(24 * 60):
        hour = minute // 60
        if st == "hamburg-sternschanze" and hour == 3 and 10 <= minute % 60 < 30:
            continue  # 20-minute outage: 40 of 60 minutes, an invalid hour
        if st == "muenchen-stachus" and hour == 14:
            continue  # a whole missing hour
        fields = []
        for p, b in base.items():
            if st == "berlin-mitte" and p == "so2" and hour in (8, 9):
                continue
            daily = 1 + 0.3 * math.sin((minute / 1440) * 2 * math.pi - 1.2)
            v = b * daily * (1 + 0.1 * si) + rng.gauss(0, b * 0.05)
            fields.append(f"{p}={max(v, 0):.3f}")
        ts = (day + minute * 60) * 1_000_000_000
        lines.append(f"air_quality,station={st} {','.join(fields)} {ts}")
body = ("# DML\n# CONTEXT-DATABASE: airquality\n" + "\n".join(lines) + "\n").encode()
with open(out, "wb") as f:
    with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(body)
print(f"{out}: {len(lines)} lines")
