#!/usr/bin/env python3
"""Line protocol for the benchmark: DAYS days from START of 1-minute readings,
STATIONS stations (default 20) x 6 pollutants, seeded, with realistic gaps (a
station outage of a few hours, random missing minutes, a pollutant sensor
down for a day). Writes to stdout, one line per station and minute with the
six fields (five on a dead sensor's day).
    gen_month.py [DAYS [START [STATIONS]]]"""
import random, sys
from datetime import datetime, timezone

days = int(sys.argv[1]) if len(sys.argv) > 1 else 30
start = int(datetime.fromisoformat(sys.argv[2] if len(sys.argv) > 2 else "2026-10-01T00:00:00+00:00").timestamp())
rng = random.Random(42)
base = {"co": 0.4, "no2": 28.0, "o3": 35.0, "pm10": 22.0, "pm25": 13.0, "so2": 3.5}
n = int(sys.argv[3]) if len(sys.argv) > 3 else 20
stations = [f"station-{i:02d}" for i in range(n)]
out = sys.stdout
buf = []
for si, st in enumerate(stations):
    outage_day = rng.randrange(days)
    outage_hour = rng.randrange(20)
    dead_pollutant = list(base)[si % 6]
    dead_day = rng.randrange(days)
    level = {p: b * (0.8 + 0.04 * si) for p, b in base.items()}
    for minute in range(days * 1440):
        day, mod = divmod(minute, 1440)
        hour = mod // 60
        if day == outage_day and outage_hour <= hour < outage_hour + 3:
            continue
        if rng.random() < 0.02:
            continue
        fields = []
        for p, b in level.items():
            if p == dead_pollutant and day == dead_day:
                continue
            level[p] = max(0.0, b + rng.gauss(0, base[p] * 0.01))
            fields.append(f"{p}={level[p]:.3f}")
        buf.append(f"air_quality,station={st} {','.join(fields)} {start + minute * 60}\n")
        if len(buf) >= 20000:
            out.write("".join(buf)); buf.clear()
out.write("".join(buf))
