{#-
  exceedance_days (grain: day; depends_on: daily_mean, daily_max_8h). Per
  pollutant, station, local day and limit value: how many valid values the
  day has (`n_values`: valid hours for an hourly limit; 1 for a valid day,
  else 0, for a daily one) and how many are strictly above the limit
  (`n_exceedances`). The day-level counts `exceedances` adds up per year,
  so that an hour's change recomputes one day here and one year's sums
  there, not a year of hourly rows.

  Values: valid hourly averages (`hourly`); daily means of valid days
  (`daily_mean`: 75 % of the day's hours valid); maximum daily 8-hour means
  of valid days (`max_daily_8h_mean`: valid 8-hour means for 75 % of the
  day's hours). Limits: the `limit` rules of those metrics (rules.sql, or
  the spec's `rules:`) that judge the day's calendar year, each row saying its
  `instrument` and `basis` (`in_force`, or `outlook` for the 2030 values
  before 2030). CO is in mg/m3, the rest in µg/m3.
-#}
{% import "products.sql" as p -%}
{%- if "daily_mean" not in inputs or "daily_max_8h" not in inputs -%}
{{ fail("model `" ~ model.name ~ "` reads the daily means and maxima: set `depends_on: [daily_mean, daily_max_8h]`") }}
{%- endif -%}
{%- if params.metrics is defined -%}
{{ fail("model `" ~ model.name ~ "`: `params.metrics` was replaced by `rules:` (README \"Rules\")") }}
{%- endif -%}
WITH vals AS (
    SELECT 'hourly' AS metric, hr.pollutant, {{ p.tags_of(tags, "hr.") }}c.day, hr.avg AS value
    FROM {{ hourly }} hr JOIN {{ calendar }} c ON c.h = hr.h
    WHERE {{ p.valid(params, "hr.") }}
    UNION ALL
    SELECT 'daily_mean', pollutant, {{ p.tags_of(tags, "") }}day, mean
    FROM {{ inputs.daily_mean }} WHERE valid
    UNION ALL
    SELECT 'max_daily_8h_mean', pollutant, {{ p.tags_of(tags, "") }}day, max_8h
    FROM {{ inputs.daily_max_8h }} WHERE valid
),
rules AS ({{ p.rules(params, ["limit"], ["hourly", "daily_mean", "max_daily_8h_mean"]) }})
SELECT d.pollutant, {{ p.tags_of(tags, "d.") }}d.day, m.instrument,
    {{ p.basis("m.", "year(d.day)") }} AS basis, m.metric,
    m.value AS limit_value, m.unit, m.allowed,
    count(v.value) AS n_values,
    count(v.value) FILTER (WHERE v.value > m.value) AS n_exceedances
FROM {{ inputs.daily_mean }} d
JOIN rules m ON m.pollutant = d.pollutant AND {{ p.judges_year("m.", "year(d.day)") }}
LEFT JOIN vals v ON v.pollutant = d.pollutant{{ p.same_tags(tags, "v.", "d.") }}
    AND v.day = d.day AND v.metric = m.metric
WHERE d.day >= {{ keys_from }} AND d.day < {{ keys_to }}
GROUP BY ALL
