{#-
  daily_max_8h (grain: day, lookback 7h). Per pollutant, station and local
  day: the maximum of the valid 8-hour running means (6 of 8 hours valid)
  that end on that day (`max_8h`; the first window of a day runs 17:00 of
  the day before to 01:00, the last 16:00 to 24:00: 2008/50/EC Annex VII),
  the label of the earliest window reaching it (`max_8h_hour`, the start of
  its last hour), `n_valid_8h`, `hours_in_day`, and `valid` (valid 8-hour
  means for 75 % of the day's hours: 18 of 24). A row for every local day
  with at least one 8-hour window.
-#}
{% import "products.sql" as p -%}
{%- if model.lookback_hours < 7 -%}
{{ fail("model `" ~ model.name ~ "`: daily maximum 8-hour means need `lookback: 7h`") }}
{%- endif -%}
SELECT pollutant, {{ p.tags_of(tags, "") }}day, max_8h,
    to_timestamp(max_8h_h * 3600) AS max_8h_hour,
    n_valid_8h, hours_in_day,
    {{ p.day_complete("n_valid_8h", "hours_in_day") }} AS valid
FROM ({{ p.daily_max_8h(hourly, newest, calendar, params, tags, key_hours_from, key_hours_to) }})
WHERE day >= {{ keys_from }} AND day < {{ keys_to }}
