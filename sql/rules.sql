{#-
  The rules the stock products judge by: limit values, target values,
  information and alert thresholds, and the data-coverage criterion of an
  annual mean, each with the instrument that sets it and the period it
  applies to. A product model reads the spec's `rules:` (as `params.rules`)
  when its pipeline or the model sets it (a network's national values, a
  YAML list of the same maps, checked at spec load), else this list. See
  README "Rules".

  Fields: `instrument`; `pollutant` (co, no2, o3, pm10, pm25, so2, mapped to
  job names by `params.pollutants`; none for a criterion: every pollutant);
  `kind` (limit, target, information, alert, criterion); `metric` (hourly,
  daily_mean, max_daily_8h_mean, annual_mean, aot40); `value` (CO in mg/m3,
  AOT40 in µg/m3·h, a criterion as a fraction, the rest in µg/m3);
  `allowed` exceedances a calendar year (limits and the ozone target; 0 when
  absent); `consecutive` hours (hourly thresholds) or days (daily ones) that
  must all exceed, 1 when absent; `years` a target is averaged over;
  `valid_from` and `valid_to` (dates, the period `[from, to)`; open when
  absent); `outlook` (also reported, as `basis = 'outlook'`, for the years
  before `valid_from`: the 2030 limit values teams plan against today).

  Periods: a threshold judges an hour (UTC, by the last hour of its window)
  or a local day in `[valid_from, valid_to)`; a limit, target or criterion
  judges a calendar year whose 1 January is in it. Directive 2008/50/EC is
  repealed with effect from 12 December 2026 (Directive (EU) 2024/2881 Art.
  31): its thresholds judge hours and days before that date, its limit
  values, targets and criterion the years up to 2026; those of 2024/2881
  Annex I Table 2 (the same values) the years 2027-2029, Table 1 the years
  from 2030. Values: ../shared/reference/eu-air-quality-standards.md, as
  README "Rules" cites them.
-#}
{%- set rules = [
    {"instrument": "2008/50/EC Annex XI", "pollutant": "pm10", "kind": "limit", "metric": "daily_mean", "value": 50, "allowed": 35, "valid_to": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XI", "pollutant": "pm10", "kind": "limit", "metric": "annual_mean", "value": 40, "valid_to": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XIV", "pollutant": "pm25", "kind": "limit", "metric": "annual_mean", "value": 25, "valid_to": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XI", "pollutant": "no2", "kind": "limit", "metric": "hourly", "value": 200, "allowed": 18, "valid_to": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XI", "pollutant": "no2", "kind": "limit", "metric": "annual_mean", "value": 40, "valid_to": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XI", "pollutant": "so2", "kind": "limit", "metric": "hourly", "value": 350, "allowed": 24, "valid_to": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XI", "pollutant": "so2", "kind": "limit", "metric": "daily_mean", "value": 125, "allowed": 3, "valid_to": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XI", "pollutant": "co", "kind": "limit", "metric": "max_daily_8h_mean", "value": 10, "valid_to": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Table 2", "pollutant": "pm10", "kind": "limit", "metric": "daily_mean", "value": 50, "allowed": 35, "valid_from": "2026-12-12", "valid_to": "2030-01-01"},
    {"instrument": "(EU) 2024/2881 Annex I Table 2", "pollutant": "pm10", "kind": "limit", "metric": "annual_mean", "value": 40, "valid_from": "2026-12-12", "valid_to": "2030-01-01"},
    {"instrument": "(EU) 2024/2881 Annex I Table 2", "pollutant": "pm25", "kind": "limit", "metric": "annual_mean", "value": 25, "valid_from": "2026-12-12", "valid_to": "2030-01-01"},
    {"instrument": "(EU) 2024/2881 Annex I Table 2", "pollutant": "no2", "kind": "limit", "metric": "hourly", "value": 200, "allowed": 18, "valid_from": "2026-12-12", "valid_to": "2030-01-01"},
    {"instrument": "(EU) 2024/2881 Annex I Table 2", "pollutant": "no2", "kind": "limit", "metric": "annual_mean", "value": 40, "valid_from": "2026-12-12", "valid_to": "2030-01-01"},
    {"instrument": "(EU) 2024/2881 Annex I Table 2", "pollutant": "so2", "kind": "limit", "metric": "hourly", "value": 350, "allowed": 24, "valid_from": "2026-12-12", "valid_to": "2030-01-01"},
    {"instrument": "(EU) 2024/2881 Annex I Table 2", "pollutant": "so2", "kind": "limit", "metric": "daily_mean", "value": 125, "allowed": 3, "valid_from": "2026-12-12", "valid_to": "2030-01-01"},
    {"instrument": "(EU) 2024/2881 Annex I Table 2", "pollutant": "co", "kind": "limit", "metric": "max_daily_8h_mean", "value": 10, "valid_from": "2026-12-12", "valid_to": "2030-01-01"},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "pm25", "kind": "limit", "metric": "daily_mean", "value": 25, "allowed": 18, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "pm25", "kind": "limit", "metric": "annual_mean", "value": 10, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "pm10", "kind": "limit", "metric": "daily_mean", "value": 45, "allowed": 18, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "pm10", "kind": "limit", "metric": "annual_mean", "value": 20, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "no2", "kind": "limit", "metric": "hourly", "value": 200, "allowed": 3, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "no2", "kind": "limit", "metric": "daily_mean", "value": 50, "allowed": 18, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "no2", "kind": "limit", "metric": "annual_mean", "value": 20, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "so2", "kind": "limit", "metric": "hourly", "value": 350, "allowed": 3, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "so2", "kind": "limit", "metric": "daily_mean", "value": 50, "allowed": 18, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "so2", "kind": "limit", "metric": "annual_mean", "value": 20, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "co", "kind": "limit", "metric": "max_daily_8h_mean", "value": 10, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "(EU) 2024/2881 Annex I Table 1", "pollutant": "co", "kind": "limit", "metric": "daily_mean", "value": 4, "allowed": 18, "valid_from": "2030-01-01", "outlook": true},
    {"instrument": "2008/50/EC Annex VII", "pollutant": "o3", "kind": "target", "metric": "max_daily_8h_mean", "value": 120, "allowed": 25, "years": 3, "valid_to": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 2", "pollutant": "o3", "kind": "target", "metric": "max_daily_8h_mean", "value": 120, "allowed": 18, "years": 3, "valid_from": "2026-12-12", "outlook": true},
    {"instrument": "2008/50/EC Annex VII", "pollutant": "o3", "kind": "target", "metric": "aot40", "value": 18000, "years": 5, "valid_to": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 2", "pollutant": "o3", "kind": "target", "metric": "aot40", "value": 18000, "years": 5, "valid_from": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XII B", "pollutant": "o3", "kind": "information", "metric": "hourly", "value": 180, "valid_to": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XII B", "pollutant": "o3", "kind": "alert", "metric": "hourly", "value": 240, "valid_to": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XII A", "pollutant": "no2", "kind": "alert", "metric": "hourly", "value": 400, "consecutive": 3, "valid_to": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XII A", "pollutant": "so2", "kind": "alert", "metric": "hourly", "value": 500, "consecutive": 3, "valid_to": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 4", "pollutant": "so2", "kind": "information", "metric": "hourly", "value": 275, "valid_from": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 4", "pollutant": "so2", "kind": "alert", "metric": "hourly", "value": 350, "consecutive": 3, "valid_from": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 4", "pollutant": "no2", "kind": "information", "metric": "hourly", "value": 150, "valid_from": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 4", "pollutant": "no2", "kind": "alert", "metric": "hourly", "value": 200, "consecutive": 3, "valid_from": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 4", "pollutant": "o3", "kind": "information", "metric": "hourly", "value": 180, "valid_from": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 4", "pollutant": "o3", "kind": "alert", "metric": "hourly", "value": 240, "valid_from": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 4", "pollutant": "pm10", "kind": "information", "metric": "daily_mean", "value": 90, "valid_from": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 4", "pollutant": "pm10", "kind": "alert", "metric": "daily_mean", "value": 90, "consecutive": 3, "valid_from": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 4", "pollutant": "pm25", "kind": "information", "metric": "daily_mean", "value": 50, "valid_from": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex I Section 4", "pollutant": "pm25", "kind": "alert", "metric": "daily_mean", "value": 50, "consecutive": 3, "valid_from": "2026-12-12"},
    {"instrument": "2008/50/EC Annex XI A", "kind": "criterion", "metric": "annual_mean", "value": 0.9, "valid_to": "2026-12-12"},
    {"instrument": "(EU) 2024/2881 Annex V C", "kind": "criterion", "metric": "annual_mean", "value": 0.85, "valid_from": "2026-12-12"},
] -%}
