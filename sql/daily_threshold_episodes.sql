{#-
  daily_threshold_episodes (grain: day; depends_on: daily_mean; lookback:
  72h, the longest `consecutive` days of the daily thresholds). The
  information and alert thresholds on daily means (Directive (EU) 2024/2881
  Annex I Section 4: PM10 90, PM2.5 50 µg/m3; the alert after three
  consecutive days): the `information` and `alert` rules of metric
  `daily_mean` (rules.sql, or the spec's `rules:`). An episode is reached on
  local day d when the valid daily means (75 % of the day's hours valid)
  of each of the rule's `consecutive` days up to d are strictly above the
  threshold, the rule judges d (its period holds the date), every one of
  those days is over (the pollutant's newest loaded hour is the day's last
  or later: a day in progress has no daily mean yet), and the window
  ending the day before was not also full (or d is the rule's first day).

  One row per episode, keyed by `day`, the day it is reached; `first_day`
  is its first exceeding day, `values` the daily means of its days,
  `averaging` '1 day'. `episode` (pollutant, station, threshold, first
  day) and `resource` as in threshold_episodes, so the same `events:` name
  sends each new episode once.
-#}
{% import "products.sql" as p -%}
{%- if "daily_mean" not in inputs -%}
{{ fail("model `" ~ model.name ~ "` reads the daily means: set `depends_on: [daily_mean]`") }}
{%- endif -%}
WITH t AS ({{ p.rules(params, ["information", "alert"], ["daily_mean"]) }}),
bad AS (
    SELECT * FROM t WHERE consecutive * 24 > {{ model.lookback_hours + 24 }}
),
closed AS (
    SELECT n.pollutant, c.day
    FROM (SELECT day, max(h) AS last_h FROM {{ calendar }} GROUP BY day) c
    JOIN {{ newest }} n ON n.h >= c.last_h
),
above AS (
    SELECT t.name, t.kind AS threshold, t.value, t.consecutive, t.instrument, t.valid_from, t.valid_to,
        d.pollutant, {{ p.tags_of(tags, "d.") }}d.day, d.mean::DOUBLE AS mean
    FROM {{ inputs.daily_mean }} d
    JOIN t ON d.pollutant = t.pollutant
    JOIN closed c ON c.pollutant = d.pollutant AND c.day = d.day
    WHERE d.valid AND d.mean > t.value
),
reached AS (
    SELECT a.name, a.threshold, a.value, a.consecutive, a.instrument, a.valid_from, a.pollutant,
        {{ p.tags_of(tags, "a.") }}a.day, min(b.day) AS first_day, list(b.mean ORDER BY b.day) AS values, count(*) AS n
    FROM above a JOIN above b
      ON b.name = a.name AND b.threshold = a.threshold AND b.instrument = a.instrument
     AND b.value = a.value AND b.valid_from = a.valid_from{{ p.same_tags(tags, "b.", "a.") }}
     AND b.day BETWEEN a.day - (a.consecutive - 1) AND a.day
    WHERE a.day >= a.valid_from AND a.day < a.valid_to
      AND a.day >= {{ keys_from }} AND a.day < {{ keys_to }}
    GROUP BY ALL
)
SELECT r.pollutant, {{ p.tags_of(tags, "r.") }}r.day,
    r.threshold, r.value AS threshold_value, r.consecutive AS days, '1 day' AS averaging, r.instrument,
    r.first_day, r.values,
    concat_ws('|', r.pollutant{{ p.tags_after(tags, "r.") }}, r.threshold, strftime(r.first_day, '%Y-%m-%d')) AS episode,
    'air-quality.station.' || concat_ws('.'{{ p.tags_after(tags, "r.") }}) AS resource
FROM reached r
WHERE r.n = r.consecutive
  AND (r.day = r.valid_from OR NOT EXISTS (
    SELECT 1 FROM above b
    WHERE b.name = r.name AND b.threshold = r.threshold AND b.instrument = r.instrument
      AND b.value = r.value AND b.valid_from = r.valid_from{{ p.same_tags(tags, "b.", "r.") }}
      AND b.day = r.day - r.consecutive
  ))
UNION ALL
SELECT NULL, {% for t in tags %}NULL, {% endfor %}NULL, NULL, NULL, NULL, NULL,
    error('model `{{ model.name }}`: threshold `' || name || ' ' || kind || '` (' || instrument || ') needs `consecutive` days up to the lookback + 1 day ({{ (model.lookback_hours / 24) | int + 1 }})'),
    NULL, NULL, NULL, NULL
FROM bad
