{#-
  daily_mean (grain: day). Per pollutant, station and local day: the mean
  of the valid hourly averages (`mean`), their exact sum (`valid_sum`,
  DECIMAL(38,18): `annual_mean` adds the days up), how many there are
  (`n_valid_hours`), the day's length (`hours_in_day`: 23, 24 or 25 on DST
  days) and `valid` (at least 75 % of the day's hours valid: 2008/50/EC
  Annex VII). A row for every local day holding an hourly row.
-#}
{% import "products.sql" as p -%}
SELECT pollutant, {{ p.tags_of(tags, "") }}day, mean, valid_sum, n_valid_hours, hours_in_day,
    {{ p.day_complete("n_valid_hours", "hours_in_day") }} AS valid,
    unit
FROM ({{ p.daily(hourly, calendar, params, tags) }})
WHERE day >= {{ keys_from }} AND day < {{ keys_to }}
