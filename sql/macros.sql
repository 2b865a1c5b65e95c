{#- Shared pieces of the hourly templates. -#}

{#- The UTC hour a TIMESTAMPTZ falls in. Integer microseconds, because the
    embedded DuckDB has no ICU extension (date_trunc on TIMESTAMPTZ needs it). -#}
{% macro hour_of(col) -%}
to_timestamp(epoch_us({{ col }}) // 3600000000 * 3600)
{%- endmacro %}

{#- Distinct minutes with a reading in an hour group: duplicates within a
    minute count once. One bit per minute of the hour, OR-ed and counted: the
    same answer as count(DISTINCT minute) in a fraction of the time (no hash
    set per group). Valid only when grouping by hour, as the templates do. -#}
{% macro minutes_present(col) -%}
bit_count(bit_or(1::UBIGINT << (epoch_us({{ col }}) // 60000000 % 60)::UBIGINT))::BIGINT
{%- endmacro %}
