{#-
  exceedance_days (grain: day; depends_on: daily_mean, daily_max_8h). Per
  pollutant, station, local
  day and limit: how many valid values the day has (`n_values`: valid
  hours for an hourly limit; 1 for a valid day, else 0, for a daily one)
  and how many are strictly above the limit (`n_exceedances`). The day-level
  counts `exceedances` adds up per year, so that an hour's change
  recomputes one day here and one year's sums there, not a year of hourly
  rows.

  Values: valid hourly averages (`hourly`); daily means of valid days
  (`daily_mean`: 75 % of the day's hours valid); maximum daily 8-hour means
  of valid days (`max_daily_8h_mean`: valid 8-hour means for 75 % of the
  day's hours). Limits: Directive 2008/50/EC Annex XI and Annex VII (O3
  target value), and Directive (EU) 2024/2881 Annex I (limit values to be
  attained by 1 January 2030). CO is in mg/m3, the rest in µg/m3.
  `params.metrics` replaces the list (same keys).
-#}
{% import "products.sql" as p -%}
{%- if "daily_mean" not in inputs or "daily_max_8h" not in inputs -%}
{{ fail("model `" ~ model.name ~ "` reads the daily means and maxima: set `depends_on: [daily_mean, daily_max_8h]`") }}
{%- endif -%}
{%- set metrics = params.metrics if params.metrics is defined else [
    {"directive": "2008/50/EC", "pollutant": "pm10", "statistic": "daily_mean", "limit": 50, "allowed": 35},
    {"directive": "2008/50/EC", "pollutant": "no2", "statistic": "hourly", "limit": 200, "allowed": 18},
    {"directive": "2008/50/EC", "pollutant": "so2", "statistic": "hourly", "limit": 350, "allowed": 24},
    {"directive": "2008/50/EC", "pollutant": "so2", "statistic": "daily_mean", "limit": 125, "allowed": 3},
    {"directive": "2008/50/EC", "pollutant": "co", "statistic": "max_daily_8h_mean", "limit": 10, "allowed": 0},
    {"directive": "2008/50/EC", "pollutant": "o3", "statistic": "max_daily_8h_mean", "limit": 120, "allowed": 25},
    {"directive": "(EU) 2024/2881", "pollutant": "pm25", "statistic": "daily_mean", "limit": 25, "allowed": 18},
    {"directive": "(EU) 2024/2881", "pollutant": "pm10", "statistic": "daily_mean", "limit": 45, "allowed": 18},
    {"directive": "(EU) 2024/2881", "pollutant": "no2", "statistic": "hourly", "limit": 200, "allowed": 3},
    {"directive": "(EU) 2024/2881", "pollutant": "no2", "statistic": "daily_mean", "limit": 50, "allowed": 18},
    {"directive": "(EU) 2024/2881", "pollutant": "so2", "statistic": "hourly", "limit": 350, "allowed": 3},
    {"directive": "(EU) 2024/2881", "pollutant": "so2", "statistic": "daily_mean", "limit": 50, "allowed": 18},
    {"directive": "(EU) 2024/2881", "pollutant": "co", "statistic": "daily_mean", "limit": 4, "allowed": 18},
    {"directive": "(EU) 2024/2881", "pollutant": "co", "statistic": "max_daily_8h_mean", "limit": 10, "allowed": 0},
    {"directive": "(EU) 2024/2881", "pollutant": "o3", "statistic": "max_daily_8h_mean", "limit": 120, "allowed": 18},
] -%}
WITH vals AS (
    SELECT 'hourly' AS statistic, hr.pollutant, {{ p.tags_of(tags, "hr.") }}c.day, hr.avg AS value
    FROM {{ hourly }} hr JOIN {{ calendar }} c ON c.h = hr.h
    WHERE {{ p.valid(params, "hr.") }}
    UNION ALL
    SELECT 'daily_mean', pollutant, {{ p.tags_of(tags, "") }}day, mean
    FROM {{ inputs.daily_mean }} WHERE valid
    UNION ALL
    SELECT 'max_daily_8h_mean', pollutant, {{ p.tags_of(tags, "") }}day, max_8h
    FROM {{ inputs.daily_max_8h }} WHERE valid
),
metrics AS (
    SELECT * FROM (VALUES
{%- for m in metrics %}
        ({{ m.directive | sqlstr }}, {{ p.job_of(params, m.pollutant) }}, {{ m.statistic | sqlstr }}, {{ m.limit }}::DOUBLE, {{ m.allowed }}, {{ ("mg/m3" if m.pollutant == "co" else "µg/m3") | sqlstr }}){% if not loop.last %},{% endif %}
{%- endfor %}
    ) m(directive, pollutant, statistic, limit_value, allowed, unit)
)
SELECT d.pollutant, {{ p.tags_of(tags, "d.") }}d.day, m.directive, m.statistic AS metric,
    m.limit_value, m.unit, m.allowed,
    count(v.value) AS n_values,
    count(v.value) FILTER (WHERE v.value > m.limit_value) AS n_exceedances
FROM {{ inputs.daily_mean }} d
JOIN metrics m ON m.pollutant = d.pollutant
LEFT JOIN vals v ON v.pollutant = d.pollutant{{ p.same_tags(tags, "v.", "d.") }}
    AND v.day = d.day AND v.statistic = m.statistic
WHERE d.day >= {{ keys_from }} AND d.day < {{ keys_to }}
GROUP BY ALL
