# shellcheck shell=sh
# Sourced by hook.sh, the PostgreSQL example's hooks: functions and settings only.
# The catalog from the shell: catalog.py (a python3 start), or curl where there is one;
# the view a promote reads (its role and WAL position, the members and, in sync mode, the
# sync record) in one psql that runs curl itself; the sync record in the KV.

catalog() { timeout 5 "$PY" "$HOME_DIR/catalog.py" "$@"; }

VIEW=""  # promote: the sync record ("-": none) on one line, then the members, read once
load_view() { VIEW=$(catalog view "$SERVICE" "$JOB" "$SYNC_KEY" 2>/dev/null); }
members_view() {  # (builtins once the view was read: the promote calls it on its path)
    if [ -z "$VIEW" ]; then catalog members "$SERVICE" "$JOB" 2>/dev/null; return; fi
    case "$VIEW" in *"$NL"*) printf '%s\n' "${VIEW#*"$NL"}" ;; esac
}
sync_record() {
    if [ -z "$VIEW" ]; then kv_get "$SYNC_KEY" 2>/dev/null; return; fi
    line=${VIEW%%"$NL"*}
    [ "$line" = - ] || printf '%s\n' "$line"
}

kv_get() {  # kv_get KEY: its value; exit 3 when the key does not exist (as catalog.py get)
    if command -v "$CURL" >/dev/null 2>&1; then
        got=$({ curl_config "/v1/kv/$1?raw"; printf 'write-out = "\\n%%{http_code}"\n'; } |
            "$CURL" -K - 2>/dev/null)
        case "$got" in
        *"${NL}200") printf '%s\n' "${got%"${NL}200"}"; return 0 ;;
        *"${NL}404") return 3 ;;
        esac
        # (any other answer: catalog.py, which says what went wrong)
    fi
    catalog get "$1"
}

# A sync-mode promote reads the sync record and the members, decides, then publishes the
# new set: two python3 starts on a failover's path, 0.1-0.7 s each on a loaded machine.
# view_put_start runs `catalog.py view-put` once, which prints the view and then waits on a
# FIFO for the record to store (or for nothing, when the hook refuses or dies).
view_put_start() {
    VP_F="$DIR/promote.$$.vp"
    rm -f "$VP_F.go" "$VP_F.out"
    mkfifo "$VP_F.go" "$VP_F.out" 2>/dev/null || return 1
    # (both FIFOs are opened in the same order on both sides: no polling, no deadlock)
    (timeout 30 "$PY" "$HOME_DIR/catalog.py" view-put "$SERVICE" "$JOB" "$SYNC_KEY" \
        <"$VP_F.go" >"$VP_F.out" 2>/dev/null) &
    VP_PID=$!
    # (descriptors 6 and 7: 9 holds the hook lock, which closing it would release)
    exec 6>"$VP_F.go" 7<"$VP_F.out"
    VIEW=""
    while IFS= read -r line <&7; do
        if [ "$line" = "--" ]; then return 0; fi
        VIEW="$VIEW${VIEW:+
}$line"
    done
    exec 6>&- 7<&-  # it ended without the view
    VP_PID=""
    VIEW=""
    return 1
}

view_put_finish() {  # view_put_finish RECORD: store it through the waiting process
    (printf '%s\n' "$1" >&6) 2>/dev/null
    exec 6>&-
    IFS= read -r line <&7 || line=""
    exec 7<&-
    wait "$VP_PID"
    [ "$line" = stored ]
}

curl_config() {  # curl_config PATH [FILE]: curl's config for PATH on the catalog (PUT FILE)
    caddr=${CONSUL_HTTP_ADDR:-${CONSUL:-127.0.0.1:8500}}
    case "$caddr" in *://*) ;; *) caddr="http://$caddr" ;; esac
    printf 'url = "%s%s"\n' "$caddr" "$1"
    if [ -n "${2:-}" ]; then printf 'request = "PUT"\ndata-binary = "@%s"\n' "$2"; fi
    printf 'max-time = %s\nsilent\nshow-error\n' "${PG_CATALOG_TIMEOUT:-2}"
    if [ -n "${CONSUL_HTTP_TOKEN:-}" ]; then printf 'header = "X-Consul-Token: %s"\n' "$CONSUL_HTTP_TOKEN"; fi
}

kv_put_config() {  # kv_put_config KEY FILE: curl's config to PUT FILE into KEY (1: no curl)
    command -v "$CURL" >/dev/null 2>&1 || return 1
    curl_config "/v1/kv/$1" "$2"
    echo fail
}

view_by_psql() {
    # A failover's promote reads its role and WAL position, the members and (sync mode)
    # the sync record in one psql: psql runs curl itself (\set with backquotes) and parses
    # the JSON into the lines of `catalog.py view` (view_parse). Exit 1 without curl.
    command -v "$CURL" >/dev/null 2>&1 || return 1
    cfg="$DIR/promote.$$"
    { curl_config "/v1/health/service/$SERVICE"; echo fail; } >"$cfg.health"
    record_sql="select 'record -';"
    if [ "$SYNC" = 1 ]; then
        # the status code after the body: a missing key (404) is no record, an error is not
        { curl_config "/v1/kv/$SYNC_KEY?raw"; printf 'write-out = "\\n%%{http_code}"\n'; } >"$cfg.record"
        record_sql="\\set record \`$CURL -K '$cfg.record'\`
select 'record ' || case right(:'record', 3)
    when '200' then coalesce(nullif(replace(left(:'record', -4), E'\\n', ' '), ''), '-')
    when '404' then '-' else '?' end;"
    fi
    psql_local 2>&1 <<SQL
select 'self ' || case when pg_is_in_recovery() then 't ' || coalesce(pg_wal_lsn_diff(
    greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0')::bigint::text, '')
    else 'f' end;
$record_sql
\\set health \`$CURL -K '$cfg.health'\`
select 'member ' || translate(case when starts_with(s->>'ID', '$JOB-')
           then substr(s->>'ID', length('$JOB-') + 1) else s->>'ID' end, '-.', '__')
    || ' ' || coalesce(nullif(s->>'Address', ''), e->'Node'->>'Address')
    || ' ' || (s->>'Port')
    || ' ' || coalesce((select c->>'Status' from json_array_elements(ck) c
                        where coalesce(c->>'ServiceID', '') <> ''
                        order by case c->>'Status' when 'passing' then 0 when 'warning' then 1
                                 when 'critical' then 2 else 3 end desc limit 1), 'passing')
    || ' ' || coalesce(nullif((select string_agg(t, ',') from json_array_elements_text(
                  case when json_typeof(s->'Tags') = 'array' then s->'Tags' else '[]' end) t),
                  ''), '-')
    || ' ' || case when exists (select 1 from json_array_elements(ck) c
                                where coalesce(c->>'ServiceID', '') <> ''
                                  and c->>'Status' = 'critical'
                                  and c->>'Output' like 'no data yet%') then 1 else 0 end
  from json_array_elements(:'health'::json) with ordinality x(e, i),
       lateral (select e->'Service' as s, case when json_typeof(e->'Checks') = 'array'
                then e->'Checks' else '[]' end as ck) y
 order by i;
select 'end';
SQL
}

view_parse() {  # view_parse OUTPUT: rec, self_lsn, VIEW and the members file from it
    # (builtins only); 1 unless complete (and, in sync mode, with the record read)
    record="?" members="" complete=""
    : >"$DIR/promote.$$.members"
    while IFS= read -r line; do
        case "$line" in
        "self "*) set -- ${line#self }; rec=${1:-}; self_lsn=${2:-} ;;
        "record "*) record=${line#record } ;;
        "member "*)
            members="$members$NL${line#member }"
            printf '%s\n' "${line#member }" >>"$DIR/promote.$$.members"
            ;;
        end) complete=1 ;;
        esac
    done <<VIEW
$1
VIEW
    [ -n "$complete" ] && [ "$record" != "?" ] || return 1
    case "$rec" in t | f) ;; *) return 1 ;; esac
    VIEW="$record$members"
}
