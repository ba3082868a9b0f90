#!/usr/bin/env bash
# Runs the fault, bad-input and security tests and writes docs/RELIABILITY.md from what they
# report. Every figure in the page comes from this run: a test that fails is reported as failed.
#   bench/reliability.sh        (needs `make deps docker`; ~45 minutes on 2 cores)
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
log=$(mktemp -d)
# Groups left out with RELIABILITY_SKIP="docker compose …" are marked "not run in this
# regeneration" in the page, never given a figure.
skip=" ${RELIABILITY_SKIP:-} "
run() { # name, cargo args...
    local name=$1; shift
    if [[ "$skip" == *" $name "* ]]; then echo skipped >"$log/$name.rc"; : >"$log/$name.log"; return; fi
    echo "running $name…" >&2
    cargo test "$@" -- --nocapture >"$log/$name.log" 2>&1
    echo $? >"$log/$name.rc"
}
run crash --test it cycle_crash
run cluster --test it cycle_cluster
run faults --test it cycle_faults
run outages --test it cycle_outages
run supervised --test it cycle_up_supervised::the_writer_killed_under_up_mid_benchmark
run resume --test it cycle_resume
run multihost --test it cycle_multihost::a_two_host
run tune --test it cycle_tune::the_writer_killed_mid_tuning
run concurrent --test it cycle_concurrent::the_writer_killed_during
run hostile --test it hostile_output
run delivery -p threadcycle-handoffs --test it handoff_delivery
run security -p threadcycle-handoffs --test it security
run escalation --test it cycle_escalation
run docker --test it cycle_docker
run fuzz -p threadcycle-protocol --lib
run gguf -p threadcycle-reader --lib gguf
run compose --test it compose
run operators --test it two_operators
# Generated inputs with counts: 10,000 per input class unless FUZZ_CASES says otherwise.
if [[ "$skip" == *" fuzzcounts "* ]]; then echo skipped >"$log/fuzzcounts.rc"; : >"$log/fuzzcounts.md"
else bench/fuzz.sh >"$log/fuzzcounts.md" 2>&1; echo $? >"$log/fuzzcounts.rc"; fi
status() {
    case "$(cat "$log/$1.rc")" in
        0) echo "passed" ;;
        skipped) echo "not run in this regeneration" ;;
        *) echo "**FAILED** (see the test output)" ;;
    esac
}
passed() { [ "$(cat "$log/$1.rc")" = skipped ] && { echo "not run"; return; }; grep -Eo '[0-9]+ passed' "$log/$1.log" | awk '{s+=$1} END {print s+0}'; }
panics=$(cat "$log"/*.log | grep -c "panicked at" || true)
# Every fault test prints one line when it ends, passed or failed:
#   RELIABILITY scenario=<test> outcome=<passed|failed> faults=<n> results_checked=<n> lost=<n>
#   duplicates=<n> dead_letters=<n> refused=<n> [key=value…]   ("-": never reached)
cat "$log"/*.log | grep -ao "RELIABILITY scenario=.*" >"$log/lines" || true
line() { grep -m1 "^RELIABILITY scenario=$1 " "$log/lines"; }
fig() { # scenario key: the figure, empty when the line or the key is missing
    line "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}
group_of() { # scenario → the run group that holds it
    grep -l "^RELIABILITY scenario=$1 " "$log"/*.log 2>/dev/null | head -1
}
outcome() { # scenario group
    local o; o=$(fig "$1" outcome)
    if [ "$(cat "$log/$2.rc")" = skipped ]; then echo "not run in this regeneration"
    elif [ "$o" = passed ]; then echo "passed"
    elif [ "$o" = failed ]; then echo "**FAILED**"
    else echo "**FAILED** (no figures printed: the test did not run to its end)"; fi
}
cell() { # scenario key group: the figure, or why there is none
    local v; v=$(fig "$1" "$2")
    if [ "$(cat "$log/$3.rc")" = skipped ]; then echo "not run"
    elif [ -z "$v" ]; then echo "not printed"
    elif [ "$v" = - ]; then echo "not reached"
    else echo "$v"; fi
}
num() { local v; v=$(fig "$1" "$2"); [[ "$v" =~ ^[0-9]+$ ]] && echo "$v" || echo 0; }
# A fault row: description, phase, scenario, group.
fault_row() {
    echo "| $1 | $2 | \`$3\` | $(outcome "$3" "$4") | $(cell "$3" faults "$4") | $(cell "$3" results_checked "$4") | $(cell "$3" lost "$4") | $(cell "$3" duplicates "$4") |"
}
FAULTS=(
    "every_agent_killed_in_every_phase_and_restarted_completes_the_cycle_exactly_once crash"
    "the_writer_killed_with_a_container_up_leaves_no_container_behind crash"
    "the_writer_killed_mid_benchmark_and_restarted_completes_the_cycle_without_duplicates crash"
    "the_nats_server_killed_mid_cycle_and_restarted_on_its_store_completes_the_cycle crash"
    "the_handoff_stream_leader_killed_mid_cycle_on_a_three_node_cluster_loses_nothing cluster"
    "a_writer_that_stays_silent_fails_the_cycle_by_name_and_its_late_results_still_land crash"
    "main_killed_while_an_escalation_waits_still_lets_the_operator_resolve_it crash"
    "the_writer_killed_under_up_mid_benchmark_is_restarted_and_the_cycle_completes_exactly_once supervised"
    "up_interrupted_with_keep_resumes_on_its_kept_store_to_the_shape_of_an_uninterrupted_cycle resume"
    "a_cycle_canceled_with_a_partial_report_resumes_on_the_operators_server_and_the_full_report_replaces_it resume"
    "a_two_host_cycle_canceled_with_a_partial_report_resumes_on_the_same_hosts multihost"
    "the_writer_killed_mid_tuning_goes_on_from_its_stored_search tune"
    "the_writer_killed_during_the_concurrent_phase_keeps_the_levels_already_measured concurrent"
    "an_engine_that_hangs_mid_answer_is_cut_by_the_stall_limit_and_named_by_debug faults"
    "start_with_nats_unreachable_names_the_url_and_exits_non_zero faults"
    "the_docker_engine_restarted_mid_benchmark_is_survived_and_the_cycle_completes_exactly_once outages"
    "a_full_jetstream_store_is_named_and_the_cycle_resumes_when_room_returns outages"
    "a_package_delivered_twice_is_applied_once delivery"
    "a_server_restart_on_its_store_keeps_unapplied_packages delivery"
    "an_oom_killed_container_is_diagnosed_and_auto_raises_its_memory_limit docker"
    "a_never_healthy_engine_is_diagnosed_and_retried_with_a_longer_load_timeout escalation"
    "a_missing_model_is_diagnosed_skipped_and_the_cycle_still_completes escalation"
    "a_container_that_dies_at_start_gives_an_escalation_carrying_its_last_log_lines docker"
    "a_second_up_on_the_machine_is_refused_by_name_before_it_starts operators"
    "main_refuses_a_second_cycle_on_a_busy_host_and_accepts_one_after_it_ends operators"
)
sum_of() { # key over the fault scenarios
    local s=0 f
    for f in "${FAULTS[@]}"; do s=$(( s + $(num "${f%% *}" "$2") )); done
    echo $s
}
ran=0; failed_rows=0; not_run=0
for f in "${FAULTS[@]}"; do
    g=${f##* }; n=${f%% *}
    if [ "$(cat "$log/$g.rc")" = skipped ]; then not_run=$((not_run + 1)); continue; fi
    ran=$((ran + 1)); [ "$(fig "$n" outcome)" = passed ] || failed_rows=$((failed_rows + 1))
done
M=every_agent_killed_in_every_phase_and_restarted_completes_the_cycle_exactly_once
D=the_writer_killed_with_a_container_up_leaves_no_container_behind
BP=bad_packages_are_dead_lettered_and_the_agent_keeps_going
BE=bad_bytes_on_every_agents_subject_are_dead_lettered_and_each_agent_keeps_going
OV=an_oversize_payload_travels_through_the_object_store
H=hostile_model_output_is_stored_capped_and_rendered_safely_everywhere
probe=$(sed -n '/security probe/,/holes:/p' "$log/security.log" | tail -n +2)
pub=$(echo "$probe" | sed -n 's/forbidden publishes refused: //p')
sub=$(echo "$probe" | sed -n 's/forbidden subscriptions refused: //p')
bad=$(echo "$probe" | sed -n 's/bad logins refused: //p')
holes=$(echo "$probe" | sed -n 's/holes: //p')
bad_total=$(( $(num $BP faults) + $(num $BE faults) ))
dead_total=$(( $(num $BP dead_letters) + $(num $BE dead_letters) ))
{
cat <<MD
# Reliability — generated by \`bench/reliability.sh\`

Generated on $(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), nats-server $(nats-server --version 2>/dev/null | awk '{print $2}'), with real nats-server, llama-server (Gemma 3 270M) and dockerd. Each row is a test; its assertions are the figures (a "passed" row means every assertion held).

## Faults injected

Each row is one test; the figures are the ones it printed in this run (its \`RELIABILITY\` line),
counted before its assertions: "results checked" is the prompt × repetition pairs (or packages)
the test looked up, "lost" those missing from \`results.json\`/\`results.csv\` (or never
delivered), "duplicates" the extra copies found. A lost or doubled result fails the test and
shows here with its figure.

| Fault | Phase | Test | Outcome | Faults injected | Results checked | Lost | Duplicates |
|---|---|---|---|---:|---:|---:|---:|
$(fault_row "Every agent SIGKILLed and restarted once in every phase: $(cell $M agents crash) agents × $(cell $M phases crash) phases (verify, deploy, troubleshoot, benchmark, document), in one cycle ($(cell $M secs crash) s)" all $M crash)
$(fault_row "Writer SIGKILLed with its container up (Docker runtime), while deploying and mid-benchmark; $(cell $D containers_reaped crash) containers of dead Writers found by label and removed, $(cell $D containers_left crash) left behind" "deploying, benchmarking" $D crash)
$(fault_row "Writer SIGKILLed, restarted (orphan engine reaped)" benchmarking the_writer_killed_mid_benchmark_and_restarted_completes_the_cycle_without_duplicates crash)
$(fault_row "NATS server SIGKILLed, restarted on its store" benchmarking the_nats_server_killed_mid_cycle_and_restarted_on_its_store_completes_the_cycle crash)
$(fault_row "Three-node NATS cluster (streams and buckets R3): the node leading the handoff stream SIGKILLed and left down (it led $(cell the_handoff_stream_leader_killed_mid_cycle_on_a_three_node_cluster_loses_nothing leaderships_lost cluster) of the 9 streams and buckets); the other two take over ($(cell the_handoff_stream_leader_killed_mid_cycle_on_a_three_node_cluster_loses_nothing secs cluster) s)" benchmarking the_handoff_stream_leader_killed_mid_cycle_on_a_three_node_cluster_loses_nothing cluster)
$(fault_row "Writer SIGKILLed and *not* restarted: Main's watchdog fails the cycle naming \`writer-local\` after \`policy.agent_timeout_s\` (15 s here); the Writer restarted later finishes it and the completion replaces the failure" benchmarking a_writer_that_stays_silent_fails_the_cycle_by_name_and_its_late_results_still_land crash)
$(fault_row "Main SIGKILLed while an escalation waits for the operator" debugging main_killed_while_an_escalation_waits_still_lets_the_operator_resolve_it crash)
$(fault_row "Writer SIGKILLed under \`threadcycle up\`: restarted by \`up\`'s supervision; engines of the killed Writer left running: $(cell the_writer_killed_under_up_mid_benchmark_is_restarted_and_the_cycle_completes_exactly_once engines_left supervised)" benchmarking the_writer_killed_under_up_mid_benchmark_is_restarted_and_the_cycle_completes_exactly_once supervised)
$(fault_row "Ctrl-C to \`up --on-interrupt keep\` after $(cell up_interrupted_with_keep_resumes_on_its_kept_store_to_the_shape_of_an_uninterrupted_cycle runs_before resume) runs, then \`up --resume\` on its kept store: $(cell up_interrupted_with_keep_resumes_on_its_kept_store_to_the_shape_of_an_uninterrupted_cycle runs_after resume) runs more, the report shaped as an uninterrupted cycle's; resuming the completed cycle refused (refused: $(cell up_interrupted_with_keep_resumes_on_its_kept_store_to_the_shape_of_an_uninterrupted_cycle refused resume))" benchmarking up_interrupted_with_keep_resumes_on_its_kept_store_to_the_shape_of_an_uninterrupted_cycle resume)
$(fault_row "Ctrl-C to \`up\` on the operator's server (a partial report written), then \`up --resume\`: the partial report's runs kept, not measured again, the full report replaces it; results stored for the cycle: $(cell a_cycle_canceled_with_a_partial_report_resumes_on_the_operators_server_and_the_full_report_replaces_it result_keys resume); a completed and an unknown cycle refused (refused: $(cell a_cycle_canceled_with_a_partial_report_resumes_on_the_operators_server_and_the_full_report_replaces_it refused resume))" benchmarking a_cycle_canceled_with_a_partial_report_resumes_on_the_operators_server_and_the_full_report_replaces_it resume)
$(fault_row "Two-host cycle: Ctrl-C to \`up\` (a partial report), then \`up --resume\`: without its hosts refused by name (refused: $(cell a_two_host_cycle_canceled_with_a_partial_report_resumes_on_the_same_hosts refused multihost)); with them, both Readers verify again, the placement is kept, each Writer measures what its host had not stored ($(cell a_two_host_cycle_canceled_with_a_partial_report_resumes_on_the_same_hosts runs_kept multihost) runs kept), one merged report replaces the partial one" benchmarking a_two_host_cycle_canceled_with_a_partial_report_resumes_on_the_same_hosts multihost)
$(fault_row "Writer SIGKILLed under \`up\` mid-tuning: restarted by \`up\`, it goes on from the search it stored after each trial ($(cell the_writer_killed_mid_tuning_goes_on_from_its_stored_search trials_kept tune) trials kept; the one the kill cut short measured again); results checked are the model's run and its $(cell the_writer_killed_mid_tuning_goes_on_from_its_stored_search trials tune) measured trials, duplicates a trial measured twice" tuning the_writer_killed_mid_tuning_goes_on_from_its_stored_search tune)
$(fault_row "Writer SIGKILLed under \`up\` during the concurrent phase, after the first model's levels: restarted, it keeps the levels stored per model and measures the rest (models kept: $(cell the_writer_killed_during_the_concurrent_phase_keeps_the_levels_already_measured models_kept concurrent)); results checked are the (model, level) rows" concurrent the_writer_killed_during_the_concurrent_phase_keeps_the_levels_already_measured concurrent)
$(fault_row "Engine frozen (SIGSTOP) mid-answer: the stall limit (3 s) cuts the request, Debug names the stall and offers a longer limit, the operator takes it; frozen engines left: $(cell an_engine_that_hangs_mid_answer_is_cut_by_the_stall_limit_and_named_by_debug engines_left faults)" benchmarking an_engine_that_hangs_mid_answer_is_cut_by_the_stall_limit_and_named_by_debug faults)
$(fault_row "NATS unreachable when the operator starts a cycle: the error names the URL, non-zero exit after $(cell start_with_nats_unreachable_names_the_url_and_exits_non_zero secs faults) s (refused clearly: $(cell start_with_nats_unreachable_names_the_url_and_exits_non_zero refused faults))" start start_with_nats_unreachable_names_the_url_and_exits_non_zero faults)
$(fault_row "Docker engine (a private dockerd of the test's) stopped with SIGTERM mid-benchmark ($(cell the_docker_engine_restarted_mid_benchmark_is_survived_and_the_cycle_completes_exactly_once stop_secs outages) s to stop, its container with it), started again on its data root: the failure names the engine, Debug's remedy retries ($(cell the_docker_engine_restarted_mid_benchmark_is_survived_and_the_cycle_completes_exactly_once escalations outages) escalations, $(cell the_docker_engine_restarted_mid_benchmark_is_survived_and_the_cycle_completes_exactly_once attempts outages) attempts); containers left: $(cell the_docker_engine_restarted_mid_benchmark_is_survived_and_the_cycle_completes_exactly_once containers_left outages), made on the machine's engine: $(cell the_docker_engine_restarted_mid_benchmark_is_survived_and_the_cycle_completes_exactly_once containers_on_the_machine_engine outages)" benchmarking the_docker_engine_restarted_mid_benchmark_is_survived_and_the_cycle_completes_exactly_once outages)
$(fault_row "JetStream store full mid-benchmark (server restarted on its store with \`max_file_store\` = $(cell a_full_jetstream_store_is_named_and_the_cycle_resumes_when_room_returns limit_bytes outages) bytes, a few KiB over what it held): the error names the store limit, the Writer holds its runs and engine, agents died: $(cell a_full_jetstream_store_is_named_and_the_cycle_resumes_when_room_returns agents_died outages); room returned while it ran (a higher limit, reloaded), attempts: $(cell a_full_jetstream_store_is_named_and_the_cycle_resumes_when_room_returns attempts outages)" benchmarking a_full_jetstream_store_is_named_and_the_cycle_resumes_when_room_returns outages)
$(fault_row "Package delivered twice (within and past JetStream's dedup window); copies refused: $(cell a_package_delivered_twice_is_applied_once refused delivery)" "any handoff" a_package_delivered_twice_is_applied_once delivery)
$(fault_row "NATS restarted with an unapplied package in the stream" "any handoff" a_server_restart_on_its_store_keeps_unapplied_packages delivery)
$(fault_row "Container OOM-killed at its limit, remedied by Debug (auto)" deploying an_oom_killed_container_is_diagnosed_and_auto_raises_its_memory_limit docker)
$(fault_row "Engine never healthy within its load timeout, retried by policy ($(cell a_never_healthy_engine_is_diagnosed_and_retried_with_a_longer_load_timeout escalations escalation) escalations)" deploying a_never_healthy_engine_is_diagnosed_and_retried_with_a_longer_load_timeout escalation)
$(fault_row "Model missing: diagnosed and skipped, the cycle completes ($(cell a_missing_model_is_diagnosed_skipped_and_the_cycle_still_completes escalations escalation) escalations)" deploying a_missing_model_is_diagnosed_skipped_and_the_cycle_still_completes escalation)
$(fault_row "Container dies at start (not a GGUF file): escalation with its last log lines, skipped" deploying a_container_that_dies_at_start_gives_an_escalation_carrying_its_last_log_lines docker)
$(fault_row "A second operator's \`up\` while another holds the machine: refused by name (the holder's pid and plan), exit 4, nothing started (refused: $(cell a_second_up_on_the_machine_is_refused_by_name_before_it_starts refused operators))" start a_second_up_on_the_machine_is_refused_by_name_before_it_starts operators)
$(fault_row "Two operators, one Main: a second cycle for a busy host refused naming the running cycle (refused: $(cell main_refuses_a_second_cycle_on_a_busy_host_and_accepts_one_after_it_ends refused operators), cycles recorded: $(cell main_refuses_a_second_cycle_on_a_busy_host_and_accepts_one_after_it_ends cycles_recorded operators)); accepted once it was canceled" start main_refuses_a_second_cycle_on_a_busy_host_and_accepts_one_after_it_ends operators)

Totals of these rows in this run: **$(sum_of x faults) faults injected**, **$(sum_of x cycles_completed) cycles completed** (a cycle counts once its reports were written and its results counted), **$(sum_of x results_checked) results checked**, **$(sum_of x lost) lost**, **$(sum_of x duplicates) applied twice**; $((ran - failed_rows))/$ran rows passed$([ $not_run -gt 0 ] && echo ", $not_run not run in this regeneration").

In the matrix each phase is held still the moment its first event arrives (its worker is frozen
with SIGSTOP), the four other agents are killed and restarted, then the worker itself is killed
mid-work and restarted; the escalation of the troubleshoot phase is answered after all five died.
Two operators: one cycle per host, held by Main with compare-and-set and by \`up\` with a
machine lock; the refused start records and sends nothing.

## Bad input

| Input | Where | Test | Outcome |
|---|---|---|---|
| random bytes, truncated JSON, newer schema, wrong receiver, 3 forged senders | a handoff subject | \`$BP\` ($(cell $BP faults delivery) bad packages, $(cell $BP dead_letters delivery) dead letters, $(cell $BP refused delivery) with the expected reason; good packages $(cell $BP results_checked delivery), lost $(cell $BP lost delivery), applied twice $(cell $BP duplicates delivery)) | $(outcome $BP delivery) |
| garbage, truncated JSON and a JSON array on each of the five agents' subjects | every handoff subject | \`$BE\` ($(cell $BE faults delivery) bad packages, $(cell $BE dead_letters delivery) dead letters; good packages $(cell $BE results_checked delivery), lost $(cell $BE lost delivery), applied twice $(cell $BE duplicates delivery)) | $(outcome $BE delivery) |
| 3 MiB payload (3× the NATS limit) | a handoff subject | \`$OV\` (packages $(cell $OV results_checked delivery), lost $(cell $OV lost delivery), applied twice $(cell $OV duplicates delivery)) | $(outcome $OV delivery) |
| random envelopes and plan text, absurd numbers, wrong types (proptest) | plans, envelopes | protocol unit tests ($(passed fuzz) passed) | $(status fuzz) |
| truncated / hostile GGUF files (every prefix, absurd counts, huge strings, random bytes) | model files | reader GGUF tests ($(passed gguf) passed) | $(status gguf) |
| hostile model output end to end: a 10 MiB answer, NUL/control bytes, ANSI and OSC escapes, invalid UTF-8, characters split across network writes, markdown/HTML/CSV injection, an engine error full of escapes | a hostile engine measured by the real Writer, reports by the real Documentation, the CLI | \`$H\` (every report file valid UTF-8 with no control character, HTML escaped, CSV well formed, the answer capped at 4 MiB with a note, CLI output defused; results checked $(cell $H results_checked hostile), lost $(cell $H lost hostile), duplicates $(cell $H duplicates hostile)) | $(outcome $H hostile) |
| hostile model output (\`<script>\`, raw HTML, fence breaking) in a browser | reports | documentation snapshot and browser tests (run by \`make test\`) | see \`make test\` |

### Generated inputs (\`bench/fuzz.sh\`, $(status fuzzcounts))

Each input class's valid samples, mutated 1–4 times each by \`testkit::mutate\` (seeded: a run is
repeatable), through the real parser or, for engine and Ollama replies, over real HTTP to the real
client. "Refused" means a clear error; a panic would be counted and fail the run.

$(grep -E '^\||classes,' "$log/fuzzcounts.md")

Bad packages put on agents' handoff subjects in this run: $bad_total, dead-lettered: $dead_total (counted by the two tests above, $(status delivery)); hostile engine outputs: $(cell $H faults hostile) kinds ($(cell $H hostile_kinds hostile)).

Panics outside assertions in this run: $panics (each "panicked at" line is a failed assertion or a crash; 0 means none).

## Access control (\`threadcycle nats-config\`, also used by \`threadcycle up\`)

| Probe | Refused |
|---|---|
| forbidden publishes (every role × subjects it must not publish, posing as each other sender included) | ${pub:-not measured} |
| forbidden subscriptions | ${sub:-not measured} |
| bad logins (anonymous, wrong and swapped passwords) | ${bad:-not measured} |
| holes found | ${holes:-not measured} |
| a forged \`operator_decision\` (Writer posing as Main): refused by the server at publish; on the Writer's own subject, dead-lettered by \`consume\` (sender mismatch, kind Main-only, offloaded too) | \`a_forged_operator_decision_is_refused_at_publish_and_at_consume\`: $(status security) |
| another role's inbox (\`_INBOX.<role>.>\`) or the shared \`_INBOX.>\` subscribed | \`another_roles_inbox_cannot_be_subscribed\`: $(status security) |
| the blob store purged by any agent (append-only) | \`a_blob_purge_by_a_non_owner_is_refused\`: $(status security) |
| the compose deployment (generated config, one user per agent): an unauthenticated client refused, and no agent's or the operator's password in the containers' logs or in any report | \`a_cycle_completes_inside_docker_compose_with_local_images\`: $(status compose) |

Security tests: $(status security).
MD
} > docs/RELIABILITY.md
echo "wrote docs/RELIABILITY.md (logs in $log)"
grep -E "FAILED" docs/RELIABILITY.md && exit 1 || exit 0
