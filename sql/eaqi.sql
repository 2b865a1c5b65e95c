{#-
  eaqi (grain: hour). The European Air Quality Index per station and UTC
  hour. Each of PM2.5, PM10, NO2, O3 and SO2 with a valid value gets a band
  1..6 (Good, Fair, Moderate, Poor, Very poor, Extremely poor) from the
  upper bounds of bands 1..5 in µg/m3; a value equal to a bound stays in the
  lower band. `eaqi` is the worst band present, `dominant` the pollutant(s)
  in it, `n_pollutants` how many have a band, `complete` whether NO2, O3
  and PM2.5 or PM10 are among them.

  params.bands: `2024` (default; the EEA's index as revised in 2024) or
  `2017` (the table used from 2017 to 2023).
  params.pm_mean: `1h` (default; PM from valid hourly averages) or `24h`
  (from valid 24-hour running means, 18 of 24 hours, as the index did until
  2023; needs `lookback: 23h`).
-#}
{% import "products.sql" as p -%}
{%- set tables = {
    "2024": {"pm25": [5, 15, 50, 90, 140], "pm10": [15, 45, 120, 195, 270],
             "no2": [10, 25, 60, 100, 150], "o3": [60, 100, 120, 160, 180],
             "so2": [20, 40, 125, 190, 275]},
    "2017": {"pm25": [10, 20, 25, 50, 75], "pm10": [20, 40, 50, 100, 150],
             "no2": [40, 90, 120, 230, 340], "o3": [50, 100, 130, 240, 380],
             "so2": [100, 200, 350, 500, 750]},
} -%}
{%- set edition = params.bands | default("2024") | string -%}
{%- if edition not in tables -%}
{{ fail("model `" ~ model.name ~ "`: `bands` is `2024` or `2017`, not `" ~ edition ~ "`") }}
{%- endif -%}
{%- set b = tables[edition] -%}
{%- set pm = params.pm_mean | default("1h") | string -%}
{%- if pm not in ["1h", "24h"] -%}
{{ fail("model `" ~ model.name ~ "`: `pm_mean` is `1h` or `24h`, not `" ~ pm ~ "`") }}
{%- elif pm == "24h" and model.lookback_hours < 23 -%}
{{ fail("model `" ~ model.name ~ "`: PM from 24-hour means needs `lookback: 23h`") }}
{%- endif -%}
{%- set names = ["pm25", "pm10", "no2", "o3", "so2"] -%}
{%- set hourly_names = ["no2", "o3", "so2"] if pm == "24h" else names -%}
WITH vals AS (
    SELECT {{ p.tags_of(tags, "") }}h,
        CASE pollutant{% for n in hourly_names %} WHEN {{ p.job_of(params, n) }} THEN {{ n | sqlstr }}{% endfor %} END AS p,
        avg AS value
    FROM {{ hourly }}
    WHERE {{ p.valid(params, "") }}
      AND pollutant IN ({% for n in hourly_names %}{{ p.job_of(params, n) }}{% if not loop.last %}, {% endif %}{% endfor %})
{%- if pm == "24h" %}
    UNION ALL
    SELECT {{ p.tags_of(tags, "") }}h,
        CASE pollutant WHEN {{ p.job_of(params, "pm25") }} THEN 'pm25' ELSE 'pm10' END AS p,
        mean AS value
    FROM ({{ p.running(hourly, newest, params, tags, 24, key_hours_from, key_hours_to) }})
    WHERE pollutant IN ({{ p.job_of(params, "pm25") }}, {{ p.job_of(params, "pm10") }}) AND n_valid >= 18
{%- endif %}
),
banded AS (
    SELECT *,
        CASE p{% for n in names %}
            WHEN {{ n | sqlstr }} THEN CASE{% for bound in b[n] %} WHEN value <= {{ bound }} THEN {{ loop.index }}{% endfor %} ELSE 6 END{% endfor %}
        END AS band
    FROM vals
    WHERE to_timestamp(h * 3600) >= {{ keys_from }} AND to_timestamp(h * 3600) < {{ keys_to }}
),
ranked AS (
    SELECT *, max(band) OVER (PARTITION BY {{ p.tags_of(tags, "") }}h) AS idx FROM banded
)
SELECT {{ p.tags_of(tags, "") }}to_timestamp(h * 3600) AS hour_start,
{%- for n in names %}
    max(band) FILTER (WHERE p = {{ n | sqlstr }}) AS {{ n }}_band,
{%- endfor %}
    max(idx) AS eaqi,
    CASE max(idx) WHEN 1 THEN 'Good' WHEN 2 THEN 'Fair' WHEN 3 THEN 'Moderate'
        WHEN 4 THEN 'Poor' WHEN 5 THEN 'Very poor' ELSE 'Extremely poor' END AS level,
    string_agg(p, ',' ORDER BY CASE p{% for n in names %} WHEN {{ n | sqlstr }} THEN {{ loop.index }}{% endfor %} END)
        FILTER (WHERE band = idx) AS dominant,
    count(*) AS n_pollutants,
    bool_or(p = 'no2') AND bool_or(p = 'o3') AND bool_or(p IN ('pm25', 'pm10')) AS complete,
    {{ edition | sqlstr }} AS bands
FROM ranked
GROUP BY ALL
