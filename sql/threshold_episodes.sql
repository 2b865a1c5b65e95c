{#-
  threshold_episodes (grain: hour, lookback: the longest `consecutive` of
  the hourly thresholds minus 1: 2h for the shipped rules, 3h in the
  shipped pipelines). The information and alert thresholds on hourly
  values: the `information` and `alert` rules of metric `hourly` (rules.sql,
  or the spec's `rules:`). An episode is reached in hour h when the valid hourly
  values of a pollutant at a station have exceeded a threshold (strictly
  above it: a value equal to a threshold does not exceed it) in each of the
  rule's `consecutive` hours up to h, the rule judges h (its period holds
  the hour h starts, UTC), and the window ending at h-1 was not also full
  under that rule (or h is the rule's first hour: on 12 December 2026, the
  2024/2881 thresholds announce what they find then, once).

  One row per episode, keyed by `hour_start`, the hour it is reached;
  `first_hour` is its first exceeding hour, `values` the hourly means of its
  hours, `averaging` '1 hour', `instrument` the rule's. `episode`
  identifies it (pollutant, station, threshold, first hour) and `resource`
  names the station as a Prefect resource, so that `events:` can send each
  new episode once. PM thresholds, on daily means, are
  `daily_threshold_episodes`.
-#}
{% import "products.sql" as p -%}
{%- if params.thresholds is defined -%}
{{ fail("model `" ~ model.name ~ "`: `params.thresholds` was replaced by `rules:` (README \"Rules\")") }}
{%- endif -%}
WITH t AS ({{ p.rules(params, ["information", "alert"], ["hourly"]) }}),
tt AS (
    SELECT *, {{ p.from_h("") }} AS from_h, {{ p.to_h("") }} AS to_h FROM t
),
bad AS (
    SELECT * FROM tt WHERE consecutive > {{ model.lookback_hours + 1 }}
),
above AS (
    SELECT t.name, t.kind AS threshold, t.value, t.consecutive, t.instrument, t.from_h, t.to_h,
        x.pollutant, {{ p.tags_of(tags, "x.") }}x.h, x.avg
    FROM {{ hourly }} x JOIN tt t ON x.pollutant = t.pollutant
    WHERE {{ p.valid(params, "x.") }} AND x.avg > t.value
),
reached AS (
    SELECT a.name, a.threshold, a.value, a.consecutive, a.instrument, a.from_h, a.to_h, a.pollutant,
        {{ p.tags_of(tags, "a.") }}a.h, min(b.h) AS first_h, list(b.avg ORDER BY b.h) AS values, count(*) AS n
    FROM above a JOIN above b
      ON b.name = a.name AND b.threshold = a.threshold AND b.instrument = a.instrument
     AND b.value = a.value AND b.consecutive = a.consecutive AND b.from_h = a.from_h{{ p.same_tags(tags, "b.", "a.") }}
     AND b.h BETWEEN a.h - a.consecutive + 1 AND a.h
    WHERE a.h >= a.from_h AND a.h < a.to_h
      AND to_timestamp(a.h * 3600) >= {{ keys_from }} AND to_timestamp(a.h * 3600) < {{ keys_to }}
    GROUP BY ALL
)
SELECT r.pollutant, {{ p.tags_of(tags, "r.") }}to_timestamp(r.h * 3600) AS hour_start,
    r.threshold, r.value AS threshold_value, r.consecutive AS hours, '1 hour' AS averaging, r.instrument,
    to_timestamp(r.first_h * 3600) AS first_hour, r.values,
    concat_ws('|', r.pollutant{{ p.tags_after(tags, "r.") }}, r.threshold, strftime(make_timestamp(r.first_h * 3600000000), '%Y-%m-%dT%H:%M:%SZ')) AS episode,
    'air-quality.station.' || concat_ws('.'{{ p.tags_after(tags, "r.") }}) AS resource
FROM reached r
WHERE r.n = r.consecutive
  AND (r.h = r.from_h OR NOT EXISTS (
    SELECT 1 FROM above b
    WHERE b.name = r.name AND b.threshold = r.threshold AND b.instrument = r.instrument
      AND b.value = r.value AND b.from_h = r.from_h{{ p.same_tags(tags, "b.", "r.") }} AND b.h = r.h - r.consecutive
  ))
UNION ALL
SELECT NULL, {% for t in tags %}NULL, {% endfor %}NULL, NULL, NULL, NULL, NULL,
    error('model `{{ model.name }}`: threshold `' || name || ' ' || kind || '` (' || instrument || ') needs `consecutive` hours up to the lookback + 1 ({{ model.lookback_hours + 1 }})'),
    NULL, NULL, NULL, NULL
FROM bad
