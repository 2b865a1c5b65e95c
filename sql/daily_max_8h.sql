{#-
  daily_max_8h (grain: day; depends_on: rolling_8h). Per pollutant, station
  and local day: the maximum of the valid 8-hour running means (6 of 8
  hours valid: `params.min_valid_8h`) that end on that day (`max_8h`; each
  8-hour mean belongs to the day of its label, "the day on which it ends":
  the first window of a day runs 17:00 of the day before to 01:00, the last
  16:00 to 24:00: 2008/50/EC Annex VII), the label of the earliest window
  reaching it (`max_8h_hour`, the start of its last hour), `n_valid_8h`,
  `hours_in_day`, and `valid` (valid 8-hour means for 75 % of the day's
  hours: 18 of 24). A row for every local day with an 8-hour window. The
  windows are `rolling_8h`'s rows labelled in the day.
-#}
{% import "products.sql" as p -%}
{%- if "rolling_8h" not in inputs -%}
{{ fail("model `" ~ model.name ~ "` reads the 8-hour means: set `depends_on: [rolling_8h]`") }}
{%- endif -%}
SELECT pollutant, {{ p.tags_of(tags, "") }}day, max_8h,
    to_timestamp(max_8h_h * 3600) AS max_8h_hour,
    n_valid_8h, hours_in_day,
    {{ p.day_complete("n_valid_8h", "hours_in_day") }} AS valid
FROM ({{ p.daily_max_8h(inputs.rolling_8h, calendar, params, tags) }})
WHERE day >= {{ keys_from }} AND day < {{ keys_to }}
