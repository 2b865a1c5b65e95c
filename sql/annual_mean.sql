{#-
  annual_mean (grain: year; depends_on: daily_mean). Per pollutant, station
  and local calendar year: the mean of the year's valid hourly values
  (`mean`, exact: the days' `valid_sum` added up and divided once),
  `n_valid_hours`, `hours_in_year` (8760 or 8784), `coverage` (their
  ratio), `criterion` (the `criterion` rule of metric `annual_mean` in
  force for the year: 90 % under 2008/50/EC Annex XI A up to 2026, 85 %
  under (EU) 2024/2881 Annex V C from 2027; 0.9 when no rule judges the
  year), `valid` (coverage at least the criterion), and `complete` (false
  for the year in progress: the pollutant's newest loaded hour is before
  the year's last, so the row is a year-to-date value).

  One row per annual limit value judging the year (rules of kind `limit`,
  metric `annual_mean`: the one in force and the 2030 outlook), with its
  `instrument`, `basis`, `limit_value`, `unit` and `over_limit` (a valid
  year's mean strictly above it; NULL for a year that is not valid); a
  pollutant with no annual limit (O3, CO) gets one row with those NULL.
  An hour's change recomputes its day in `daily_mean` and this year from
  the year's day rows, not from a year of hourly rows.
-#}
{% import "products.sql" as p -%}
{%- if "daily_mean" not in inputs -%}
{{ fail("model `" ~ model.name ~ "` adds up the daily means: set `depends_on: [daily_mean]`") }}
{%- endif -%}
WITH y AS ({{ p.years_of(years) }}),
crit AS ({{ p.rules(params, ["criterion"], ["annual_mean"]) }}),
lim AS ({{ p.rules(params, ["limit"], ["annual_mean"]) }}),
d AS (
    SELECT pollutant, {{ p.tags_of(tags, "") }}year(day)::INTEGER AS year,
        sum(valid_sum)::DECIMAL(38, 18) AS total, sum(n_valid_hours)::BIGINT AS n_valid_hours,
        any_value(unit) AS unit
    FROM {{ inputs.daily_mean }}
    WHERE year(day) >= {{ keys_from }} AND year(day) < {{ keys_to }}
    GROUP BY ALL
),
s AS (
    SELECT d.*, y.hours_in_year,
        coalesce((SELECT max(c.value) FROM crit c
                  WHERE make_date(d.year, 1, 1) >= c.valid_from AND make_date(d.year, 1, 1) < c.valid_to), 0.9) AS criterion,
        coalesce((SELECT max(n.h) FROM {{ newest }} n WHERE n.pollutant = d.pollutant), -1) >= y.first_h + y.hours_in_year - 1 AS complete
    FROM d JOIN y ON y.year = d.year
),
v AS (
    SELECT *, n_valid_hours >= criterion::DECIMAL(18, 6) * hours_in_year AS valid FROM s
)
SELECT v.pollutant, {{ p.tags_of(tags, "v.") }}v.year,
    CASE WHEN v.n_valid_hours > 0 THEN (v.total / v.n_valid_hours)::DOUBLE END AS mean,
    v.n_valid_hours, v.hours_in_year,
    v.n_valid_hours / v.hours_in_year AS coverage,
    v.criterion, v.valid, v.complete,
    l.instrument, CASE WHEN l.instrument IS NOT NULL THEN {{ p.basis("l.", "v.year") }} END AS basis,
    l.value AS limit_value, coalesce(l.unit, v.unit) AS unit,
    CASE WHEN v.valid AND l.value IS NOT NULL THEN v.total > l.value::DECIMAL(38, 18) * v.n_valid_hours END AS over_limit
FROM v
LEFT JOIN lim l ON l.pollutant = v.pollutant AND {{ p.judges_year("l.", "v.year") }}
