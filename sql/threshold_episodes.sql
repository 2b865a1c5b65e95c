{#-
  threshold_episodes (grain: hour, lookback: the longest `hours` of the
  thresholds, 3h by default). An episode starts when valid hourly values
  of a pollutant at a station have exceeded a threshold (strictly above
  it: a value equal to a threshold does not exceed it) for `hours`
  consecutive hours, and did not in the hour before those. One row per
  episode, keyed by `hour_start`, the hour in which the episode is reached;
  `first_hour` is its first exceeding hour, `values` the hourly means of
  its `hours` hours. `episode` identifies it (station, pollutant,
  threshold, first hour) and `resource` names the station as a Prefect
  resource, so that `events:` can send each new episode once.

  Default thresholds: Directive 2008/50/EC Annex XII: A, alert thresholds
  for pollutants other than ozone, measured over three consecutive hours
  (SO2 500, NO2 400 µg/m3); B, ozone information threshold 180 and alert
  threshold 240 µg/m3 (1-hour average).

  params.thresholds replaces them: a list of
  `{pollutant, threshold, value, hours, directive}` (pollutant names as in
  `params.pollutants`, see products.sql; `hours` 1 or more, within the
  model's lookback + 1).
-#}
{% import "products.sql" as p -%}
{%- set thresholds = params.thresholds | default([
    {"pollutant": "o3", "threshold": "information", "value": 180, "hours": 1, "directive": "2008/50/EC Annex XII B"},
    {"pollutant": "o3", "threshold": "alert", "value": 240, "hours": 1, "directive": "2008/50/EC Annex XII B"},
    {"pollutant": "no2", "threshold": "alert", "value": 400, "hours": 3, "directive": "2008/50/EC Annex XII A"},
    {"pollutant": "so2", "threshold": "alert", "value": 500, "hours": 3, "directive": "2008/50/EC Annex XII A"},
]) -%}
{%- for t in thresholds -%}
{%- if t.hours is not defined or t.hours < 1 or t.hours > model.lookback_hours + 1 -%}
{{ fail("model `" ~ model.name ~ "`: threshold `" ~ t.pollutant ~ " " ~ t.threshold ~ "` needs `hours` from 1 to the model's lookback + 1 (" ~ (model.lookback_hours + 1) ~ ")") }}
{%- endif -%}
{%- endfor -%}
WITH t(job, pollutant, threshold, value, hours, directive) AS (
    VALUES {% for t in thresholds %}({{ p.job_of(params, t.pollutant) }}, {{ t.pollutant | sqlstr }}, {{ t.threshold | sqlstr }}, {{ t.value }}::DOUBLE, {{ t.hours }}, {{ t.directive | default("") | sqlstr }}){% if not loop.last %}, {% endif %}{% endfor %}
),
above AS (
    SELECT t.pollutant AS name, t.threshold, t.value, t.hours, t.directive, x.pollutant, {{ p.tags_of(tags, "x.") }}x.h, x.avg
    FROM {{ hourly }} x JOIN t ON x.pollutant = t.job
    WHERE {{ p.valid(params, "x.") }} AND x.avg > t.value
),
reached AS (
    SELECT a.name, a.threshold, a.value, a.hours, a.directive, a.pollutant, {{ p.tags_of(tags, "a.") }}a.h,
        min(b.h) AS first_h, list(b.avg ORDER BY b.h) AS values, count(*) AS n
    FROM above a JOIN above b
      ON b.name = a.name AND b.threshold = a.threshold{{ p.same_tags(tags, "b.", "a.") }}
     AND b.h BETWEEN a.h - a.hours + 1 AND a.h
    WHERE to_timestamp(a.h * 3600) >= {{ keys_from }} AND to_timestamp(a.h * 3600) < {{ keys_to }}
    GROUP BY ALL
)
SELECT r.pollutant, {{ p.tags_of(tags, "r.") }}to_timestamp(r.h * 3600) AS hour_start,
    r.threshold, r.value AS threshold_value, r.hours, r.directive,
    to_timestamp(r.first_h * 3600) AS first_hour, r.values,
    concat_ws('|', r.pollutant{{ p.tags_after(tags, "r.") }}, r.threshold, strftime(make_timestamp(r.first_h * 3600000000), '%Y-%m-%dT%H:%M:%SZ')) AS episode,
    'air-quality.station.' || concat_ws('.'{{ p.tags_after(tags, "r.") }}) AS resource
FROM reached r
WHERE r.n = r.hours
  AND NOT EXISTS (
    SELECT 1 FROM above b
    WHERE b.name = r.name AND b.threshold = r.threshold{{ p.same_tags(tags, "b.", "r.") }} AND b.h = r.h - r.hours
  )
