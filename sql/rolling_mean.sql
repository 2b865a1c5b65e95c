{#-
  rolling_8h / rolling_24h (grain: hour). Per pollutant, station and UTC
  hour h: the mean of the valid hourly averages of hours h-n+1 .. h
  (right-aligned, labelled by the start of its last hour), `n_valid`, and
  `valid` (`params.min_valid` of them: 6 of 8, 18 of 24). A row for every
  hour up to the pollutant's newest loaded hour whose window holds at least
  one valid hour. `params.hours` is n; the model's lookback must be n-1 hours.
-#}
{% import "products.sql" as p -%}
{%- if model.lookback_hours < params.hours - 1 -%}
{{ fail("model `" ~ model.name ~ "`: a " ~ params.hours ~ "-hour mean needs `lookback: " ~ (params.hours - 1) ~ "h`") }}
{%- endif -%}
SELECT pollutant, {{ p.tags_of(tags, "") }}to_timestamp(h * 3600) AS hour_start,
    mean, n_valid, n_valid >= {{ params.min_valid }} AS valid
FROM ({{ p.running(hourly, newest, params, tags, params.hours, key_hours_from, key_hours_to) }})
