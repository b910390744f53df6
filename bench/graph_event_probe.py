"""Can one tile's CUDA graph wait for another's inside the graph? A probe for the next GPU call (prepared in session 10).

    python bench/graph_event_probe.py --json out.json

Four worker threads sharing a GPU are host-bound (session 10): each tile
step is 17-20 graph runs, cut wherever the tile waits for a halo, and each
cut hands the GIL around.  A tile step that is one graph would wait for a
halo on the device instead: an *external event wait node* (captured with
``cuStreamWaitEvent(..., CU_EVENT_WAIT_EXTERNAL)``) after the neighbour's
graph made an *external event record node*
(``cuEventRecordWithFlags(..., CU_EVENT_RECORD_EXTERNAL)``).  CuPy has no
binding for the flags, so this calls the driver through ctypes.  It asks:

1. ``capture``: do both nodes capture in CuPy graphs, and does a consumer
   graph see the producer's value when the producer is launched first?
2. ``order``: when the consumer graph is *launched before* the producer (the
   host threads race), does its wait node wait for the producer's coming
   record, or pass on the record that was last made (then the host still has
   to order launches: a handshake a halo, but without copies)?
3. ``ping-pong``: the time per round of two graphs that wait for each
   other through the nodes, launched from two threads, against the same with
   a host-side wait between them;
4. ``device flags``, the fallback if wait nodes pass on old records: does a
   consumer graph whose first kernel spins until the producer's flag (a
   counter in device memory) reaches its own launch count see every value,
   with every consumer launched before its producer?

Prints one line per question and writes the answers to ``--json``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import threading
import time

CU_EVENT_WAIT_EXTERNAL = 1
CU_EVENT_RECORD_EXTERNAL = 1

_SPIN = r"""
extern "C" __global__ void spin_then_write(float* out, float* counter, long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) { }
    counter[0] += 1.0f;
    out[0] = counter[0];
}
extern "C" __global__ void read_into(const float* source, float* out) { out[0] = source[0]; }
extern "C" __global__ void signal(unsigned int* flag, unsigned int* made) {
    made[0] += 1;
    __threadfence_system();
    atomicExch(flag, made[0]);
}
extern "C" __global__ void wait_for(const volatile unsigned int* flag, unsigned int* expected) {
    expected[0] += 1;
    const unsigned int wanted = expected[0];
    while (*flag < wanted) __nanosleep(200);
}
"""


def driver():
    library = ctypes.CDLL("libcuda.so.1")
    library.cuStreamWaitEvent.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
    library.cuEventRecordWithFlags.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
    return library


def checked(code, what):
    if code != 0:
        raise RuntimeError(f"{what} failed with CUresult {code}")


def main(argv=None):
    import cupy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    cuda = driver()
    module = cupy.RawModule(code=_SPIN)
    spin, read = module.get_function("spin_then_write"), module.get_function("read_into")
    producer_stream, consumer_stream = cupy.cuda.Stream(non_blocking=True), cupy.cuda.Stream(non_blocking=True)
    outbox, counter, inbox = cupy.zeros(1, "float32"), cupy.zeros(1, "float32"), cupy.zeros(1, "float32")
    ready = cupy.cuda.Event(block=False, disable_timing=True)
    consumed = cupy.cuda.Event(block=False, disable_timing=True)
    answers = {}

    def capture(stream, body):
        with stream:
            stream.begin_capture()
            try:
                body(stream)
            finally:
                graph = stream.end_capture()
        return graph

    def produce(stream, cycles):
        checked(cuda.cuStreamWaitEvent(stream.ptr, consumed.ptr, CU_EVENT_WAIT_EXTERNAL), "wait node (consumed)")
        spin((1,), (1,), (outbox, counter, cupy.int64(cycles)))
        checked(cuda.cuEventRecordWithFlags(ready.ptr, stream.ptr, CU_EVENT_RECORD_EXTERNAL), "record node (ready)")

    def consume(stream):
        checked(cuda.cuStreamWaitEvent(stream.ptr, ready.ptr, CU_EVENT_WAIT_EXTERNAL), "wait node (ready)")
        read((1,), (1,), (outbox, inbox))
        checked(cuda.cuEventRecordWithFlags(consumed.ptr, stream.ptr, CU_EVENT_RECORD_EXTERNAL), "record node (consumed)")

    try:
        slow = capture(producer_stream, lambda s: produce(s, 50_000_000))  # about 25 ms at 2 GHz
        fast = capture(producer_stream, lambda s: produce(s, 0))
        consumer = capture(consumer_stream, consume)
    except Exception as error:  # noqa: BLE001 - the answer to question 1
        answers["capture"] = f"failed: {type(error).__name__}: {error}"
        print("capture:", answers["capture"])
    else:
        event_nodes(answers, slow, fast, consumer, producer_stream, consumer_stream, inbox, counter, args.rounds)
    device_flags(answers, module, producer_stream, consumer_stream, args.rounds)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"card": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), **answers}, handle, indent=1)
    return answers


def event_nodes(answers, slow, fast, consumer, producer_stream, consumer_stream, inbox, counter, rounds_count):
    """Questions 1 to 3 with the graphs captured: the value seen, the order, the ping-pong."""
    slow.launch(producer_stream)
    consumer.launch(consumer_stream)
    consumer_stream.synchronize()
    producer_stream.synchronize()
    answers["capture"] = "ok" if float(inbox[0]) == float(counter[0]) == 1.0 else f"wrong value {float(inbox[0])}"
    print("capture, producer launched first:", answers["capture"])

    consumer.launch(consumer_stream)  # launched first: the last record of ready is already complete
    time.sleep(0.001)
    slow.launch(producer_stream)
    consumer_stream.synchronize()
    producer_stream.synchronize()
    seen, made = float(inbox[0]), float(counter[0])
    answers["order"] = ("waits for the coming record" if seen == made else
                        f"passes on the last record (read {seen}, producer made {made}): launches must be ordered on the host")
    print("consumer launched before the producer:", answers["order"])

    def rounds(graph, stream, other_done, mine_done, host_order):
        for index in range(rounds_count):
            if host_order:
                other_done.wait()
                other_done.clear()
            graph.launch(stream)
            if host_order:
                stream.synchronize()
            mine_done.set()

    for host_order in (False, True):
        a_done, b_done = threading.Event(), threading.Event()
        b_done.set()  # the producer goes first
        started = time.perf_counter()
        threads = [threading.Thread(target=rounds, args=(fast, producer_stream, b_done, a_done, host_order)),
                   threading.Thread(target=rounds, args=(consumer, consumer_stream, a_done, b_done, host_order))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        producer_stream.synchronize()
        consumer_stream.synchronize()
        seconds = (time.perf_counter() - started) / rounds_count
        key = "ping_pong_host_waits_us" if host_order else "ping_pong_graph_nodes_us"
        answers[key] = seconds * 1e6
        print(f"ping-pong, {'host waits' if host_order else 'wait nodes in the graphs'}: {seconds * 1e6:.1f} us a round "
              f"(values consistent: {float(inbox[0]) == float(counter[0])})")


def device_flags(answers, module, producer_stream, consumer_stream, rounds_count):
    """Question 4, the fallback where wait nodes pass on old records: the consumer's graph starts with a kernel
    that spins until the producer's flag reaches the count of its own launches, so the device orders the two
    whatever order the host launched them in. Captured as plain kernels; launched consumer first."""
    import cupy

    spin, read = module.get_function("spin_then_write"), module.get_function("read_into")
    signal, wait_for = module.get_function("signal"), module.get_function("wait_for")
    outbox, counter, inbox = cupy.zeros(1, "float32"), cupy.zeros(1, "float32"), cupy.zeros(1, "float32")
    flag, made, expected = cupy.zeros(1, "uint32"), cupy.zeros(1, "uint32"), cupy.zeros(1, "uint32")
    producer_stream.synchronize()
    consumer_stream.synchronize()
    try:
        with producer_stream:
            producer_stream.begin_capture()
            try:
                spin((1,), (1,), (outbox, counter, cupy.int64(2_000_000)))  # about 1 ms
                signal((1,), (1,), (flag, made))
            finally:
                producer = producer_stream.end_capture()
        with consumer_stream:
            consumer_stream.begin_capture()
            try:
                wait_for((1,), (1,), (flag, expected))
                read((1,), (1,), (outbox, inbox))
            finally:
                consumer = consumer_stream.end_capture()
        started = time.perf_counter()
        for _ in range(rounds_count // 10):  # the host launches every consumer first: the device must order them
            consumer.launch(consumer_stream)
            producer.launch(producer_stream)
        consumer_stream.synchronize()
        producer_stream.synchronize()
        seconds = (time.perf_counter() - started) / (rounds_count // 10)
        right = float(inbox[0]) == float(counter[0]) == rounds_count // 10
        answers["device_flags"] = ("orders the graphs" if right else f"wrong: read {float(inbox[0])}, made {float(counter[0])}")
        answers["device_flags_round_us"] = seconds * 1e6
        print(f"device flags, consumer launched first: {answers['device_flags']}; {seconds * 1e6:.1f} us a round "
              "(each producer spins about 1 ms)")
    except Exception as error:  # noqa: BLE001 - an answer too
        answers["device_flags"] = f"failed: {type(error).__name__}: {error}"
        print("device flags:", answers["device_flags"])


if __name__ == "__main__":
    main()
