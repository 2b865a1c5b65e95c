{#-
  o3_target_days (grain: year; depends_on: daily_max_8h; lookback: 731
  days, so that a year's row sees the two years before it). The ozone
  target value for the protection of human health: a maximum daily 8-hour
  mean of 120 µg/m3 not to be exceeded on more than `allowed` days per
  calendar year averaged over three years (2008/50/EC Annex VII: 25 days;
  (EU) 2024/2881 Annex I Section 2: 18 days, the rules of kind `target`,
  metric `max_daily_8h_mean`; see rules.sql for the reading of the dates).

  Per station, local calendar year and target rule judging the year (in
  force, and 2024/2881's as the outlook before 2027): `n_days_over` (valid
  days, 75 % of the 8-hour means, whose maximum daily 8-hour mean is
  strictly above the value), `n_valid_days`, `n_summer_months` (of April to
  September, the months with at least `params.min_days_per_month` valid
  days, default 27: "90 % of the daily maximum 8-hour mean values (27
  available daily values per month)", 2008/50/EC Annex VII A), `valid`
  (five of those six months), `complete` (false for the year in
  progress), `mean_days` (the mean of `n_days_over` over the valid years
  among this one and the `years - 1` before it: "if the three-year average
  cannot be determined on the basis of a full and consecutive set of
  annual data, the minimum annual data required ... will be one year",
  Annex VII B), `n_years` (how many it averages), `target_value`,
  `allowed`, `instrument`, `basis`, and `over_target` (`mean_days` above
  `allowed`; NULL without a valid year).
-#}
{% import "products.sql" as p -%}
{%- if "daily_max_8h" not in inputs -%}
{{ fail("model `" ~ model.name ~ "` counts the maximum daily 8-hour means: set `depends_on: [daily_max_8h]`") }}
{%- endif -%}
WITH y AS ({{ p.years_of(years) }}),
tr AS ({{ p.rules(params, ["target"], ["max_daily_8h_mean"]) }}),
dd AS (
    SELECT pollutant, {{ p.tags_of(tags, "") }}day, year(day)::INTEGER AS year, month(day) AS month, valid, max_8h
    FROM {{ inputs.daily_max_8h }}
    WHERE pollutant IN (SELECT pollutant FROM tr)
),
mon AS (
    SELECT pollutant, {{ p.tags_of(tags, "") }}year, count(*) AS n_months
    FROM (
        SELECT pollutant, {{ p.tags_of(tags, "") }}year, month, count(*) FILTER (WHERE valid) AS n
        FROM dd WHERE month BETWEEN 4 AND 9 GROUP BY ALL
    )
    WHERE n >= {{ params.min_days_per_month | default(27) }}
    GROUP BY ALL
),
yr AS (
    SELECT dd.pollutant, {{ p.tags_of(tags, "dd.") }}dd.year, tr.instrument, tr.value, tr.allowed, tr.years,
        tr.valid_from, tr.valid_to, tr.outlook,
        count(*) FILTER (WHERE dd.valid) AS n_valid_days,
        count(*) FILTER (WHERE dd.valid AND dd.max_8h > tr.value) AS n_days_over
    FROM dd JOIN tr ON tr.pollutant = dd.pollutant
    GROUP BY ALL
),
yv AS (
    SELECT yr.*, coalesce(mon.n_months, 0) AS n_summer_months, coalesce(mon.n_months, 0) >= 5 AS valid
    FROM yr LEFT JOIN mon ON mon.pollutant = yr.pollutant{{ p.same_tags(tags, "mon.", "yr.") }} AND mon.year = yr.year
),
avg3 AS (
    SELECT k.pollutant, {{ p.tags_of(tags, "k.") }}k.year, k.instrument, k.value,
        avg(b.n_days_over) FILTER (WHERE b.valid) AS mean_days,
        count(*) FILTER (WHERE b.valid) AS n_years
    FROM yv k JOIN yv b
      ON b.pollutant = k.pollutant{{ p.same_tags(tags, "b.", "k.") }} AND b.instrument = k.instrument AND b.value = k.value
     AND b.valid_from = k.valid_from AND b.year BETWEEN k.year - k.years + 1 AND k.year
    WHERE k.year >= {{ keys_from }} AND k.year < {{ keys_to }}
    GROUP BY ALL
)
SELECT k.pollutant, {{ p.tags_of(tags, "k.") }}k.year, k.n_days_over, k.n_valid_days, k.n_summer_months, k.valid,
    coalesce((SELECT max(n.h) FROM {{ newest }} n WHERE n.pollutant = k.pollutant), -1) >= y.first_h + y.hours_in_year - 1 AS complete,
    a.mean_days, a.n_years, k.value AS target_value, k.allowed, k.instrument,
    {{ p.basis("k.", "k.year") }} AS basis,
    CASE WHEN a.n_years > 0 THEN a.mean_days > k.allowed END AS over_target
FROM yv k
JOIN y ON y.year = k.year
JOIN avg3 a ON a.pollutant = k.pollutant{{ p.same_tags(tags, "a.", "k.") }} AND a.year = k.year
    AND a.instrument = k.instrument AND a.value = k.value
WHERE k.year >= {{ keys_from }} AND k.year < {{ keys_to }} AND {{ p.judges_year("k.", "k.year") }}
