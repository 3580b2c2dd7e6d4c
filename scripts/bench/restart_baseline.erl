%% Baseline for `chom bench restart`: the same crash-then-restart cycle under Erlang/OTP's own
%% one_for_one supervisor. The child starts synchronously (proc_lib init_ack, as a gen_server
%% does and as ractor's pre_start does), signals the bench process, and crashes on request.
%% Run by scripts/bench-restart; prints one JSON line.
-module(restart_baseline).
-mode(compile).
-behaviour(supervisor).
-export([main/1, init/1, start_child/1, child_init/1]).

main([NStr]) ->
    logger:set_primary_config(level, none),
    N = list_to_integer(NStr),
    process_flag(trap_exit, true),
    {ok, _Sup} = supervisor:start_link(?MODULE, self()),
    First = receive {started, P} -> P end,
    Times = lists:sort(cycle(N, First, [])),
    Median = lists:nth(max(1, (N + 1) div 2), Times),
    P99 = lists:nth(max(1, (N * 99 + 99) div 100), Times),
    io:format("{\"bench\":\"restart\",\"impl\":\"erlang/otp ~s\",\"n\":~b,\"median_us\":~.3f,\"p99_us\":~.3f}~n",
              [erlang:system_info(otp_release), N, Median / 1000, P99 / 1000]).

cycle(0, _, Acc) -> Acc;
cycle(N, Pid, Acc) ->
    T0 = erlang:monotonic_time(nanosecond),
    Pid ! crash,
    receive
        {started, New} ->
            T1 = erlang:monotonic_time(nanosecond),
            cycle(N - 1, New, [T1 - T0 | Acc])
    end.

init(Bench) ->
    {ok, {#{strategy => one_for_one, intensity => 1000000000, period => 1},
          [#{id => child, start => {?MODULE, start_child, [Bench]},
             restart => permanent, shutdown => brutal_kill}]}}.

start_child(Bench) ->
    proc_lib:start_link(?MODULE, child_init, [Bench]).

child_init(Bench) ->
    proc_lib:init_ack({ok, self()}),
    Bench ! {started, self()},
    receive crash -> exit(crash) end.
