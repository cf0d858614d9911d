#!/usr/bin/env python3
"""Summarizes a callgrind dump of wsgate under fan-out load (see scripts/bench.sh profile).

usage: cg_summary.py CALLGRIND_DUMP LOAD_JSON > summary.md

- Fixes the dump first: counters zeroed mid-run (callgrind_control -z) leave
  in-flight frames as `calls=0` lines, which callgrind_annotate 3.19 counts as
  self cost of the caller; they are rewritten as `calls=1`.
- Self cost is grouped into categories of the per-message path (first matching
  pattern wins), normalized per delivered message (wsgate_subscriber_messages_total
  over the same window) and per upstream message.
- Inclusive cost of the functions that matter on that path.
"""
import json
import re
import subprocess
import sys
import tempfile

CATEGORIES = [
    ("upstream JSON decode (serde_json; Decoder::decode)",
     r"serde_json|serde_core|hashbrown|core::hash|BuildHasher|wsgate::upstream::decode|SipHasher|sip::"),
    ("hub publish + queue push (RwLock read, per-subscriber Mutex + VecDeque + wake)",
     r"wsgate::fanout::hub|SubQueue::push|wake_by_val|wake_by_ref|AtomicWaker>::wake|AtomicWaker::wake|task::local::Shared::schedule|task::raw::schedule|futex|lll_lock|RwLock|Mutex"),
    ("queue drain (QueueStream::poll_next: lock, Vec per batch, waker register)",
     r"QueueStream|AtomicWaker::register"),
    ("Session::handle (per-item loop, Arc/Vec drops, Instant::now + metrics)",
     r"websocket::Session|Timespec|clock_gettime|IntoIter<T,A> as core::ops::drop::Drop|Arc<T,A>::drop_slow|shared_v_clone|promotable|prometheus|wsgate::telemetry"),
    ("actix actor context (ContextFut poll, mailbox, stream/interval items, 15 s ping timer polled every wake)",
     r"actix::context_impl|actix::stream::ActorStream|actix::address|actix::fut|actix::contextitems|actix::mailbox|actix::context::|tokio::time::sleep|tokio::runtime::time|TimerEntry"),
    ("WebSocket frame encoding into the session buffer (ws Codec, Parser::write_message, BytesMut growth)",
     r"actix_http::ws::frame::Parser::write_message|Encoder<actix_http::ws::codec::Message>|WebsocketContextFut|BytesMut|bytes_mut"),
    ("memcpy (payload copies: into the ws frame buffer, then into the h1 write buffer)",
     r"memmove|memcpy"),
    ("HTTP/1 dispatcher per wake (poll, body chunk encode, flush, timer trace, polling the silent client side)",
     r"actix_http::h1|actix_http::body|WsStream|FrameGuard|actix_http::h1::payload|Decoder>::decode|Parser::parse|trace_timer_states|actix_web::server|actix_server|actix_http::"),
    ("malloc / free / realloc (incl. RawVec growth)",
     r"malloc\.c|RawVec|finish_grow|do_reserve|_int_free|_int_malloc|realloc|cfree|tcache"),
    ("tokio scheduler + I/O driver + syscall wrappers",
     r"tokio::|mio::|epoll|/send\.c|/recv\.c|/write\.c|/read\.c|sendto|recvfrom|writev|cancellation|syscall"),
]

KEY_FUNCTIONS = [
    ("Upstream::handle (one upstream frame: decode + publish)", r"Upstream as actix::stream::StreamHandler<wsgate::upstream::actor::LinkEvent>>::handle"),
    ("Decoder::decode (JSON validation + topic)", r"wsgate::upstream::decode::Decoder::decode"),
    ("Publisher::publish (all subscribers)", r"wsgate::fanout::hub::Publisher::publish"),
    ("SubQueue::push", r"wsgate::fanout::queue::SubQueue::push"),
    ("envelope encoding (OnceLock init, once per message)", r"std::sync::once_lock::OnceLock<T>::initialize"),
    ("h1 Dispatcher::poll (everything per subscriber wake)", r"<actix_http::h1::dispatcher::Dispatcher<T,S,B,X,U> as core::future::future::Future>::poll"),
    ("WebsocketContextFut::poll_next", r"<actix_web_actors::ws::WebsocketContextFut<A> as futures_core::stream::Stream>::poll_next"),
    ("ContextFut::poll (all actix contexts: sessions and the upstream actor)", r"<actix::context_impl::ContextFut<A,C> as core::future::future::Future>::poll"),
    ("QueueStream::poll_next", r"<wsgate::fanout::queue::QueueStream as futures_core::stream::Stream>::poll_next"),
    ("Session::handle(Next)", r"<wsgate::subscriber::websocket::Session as actix::stream::StreamHandler<wsgate::fanout::queue::Next>>::handle"),
    ("ws Codec::encode (frame header + payload copy)", r"<actix_http::ws::codec::Codec as tokio_util::codec::encoder::Encoder<actix_http::ws::codec::Message>>::encode"),
    ("h1 Codec::encode (body chunk copied into the write buffer)", r"<actix_http::h1::codec::Codec as tokio_util::codec::encoder::Encoder"),
    ("InnerDispatcher::poll_flush (socket write)", r"actix_http::h1::dispatcher::InnerDispatcher<T,S,B,X,U>::poll_flush"),
    ("WsStream::poll_next (polling the silent client side)", r"<actix_web_actors::ws::WsStream<S> as futures_core::stream::Stream>::poll_next"),
    ("FrameGuard::poll_next (client input: oversize guard, polled every wake)", r"websocket::FrameGuard<S> as futures_core::stream::Stream>::poll_next"),
    ("Sleep::poll (timers polled on every wake)", r"<tokio::time::sleep::Sleep as core::future::future::Future>::poll"),
    ("AddressReceiver::next_message (empty mailbox check)", r"actix::address::channel::AddressReceiver<A>::next_message"),
    ("trace_timer_states (h1 dispatcher)", r"actix_http::h1::dispatcher::trace_timer_states"),
    ("malloc", r"malloc\.c:malloc \["),
    ("free", r"malloc\.c:free \["),
    ("realloc", r"malloc\.c:realloc \["),
    ("memcpy", r"memmove-vec-unaligned-erms\.S:__memcpy_avx_unaligned_erms"),
]

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)$")


def strip(name):
    return re.sub(r" \[.*", "", name).replace("???:", "")


def annotate(path, inclusive):
    out = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100", path],
        capture_output=True, text=True, check=True).stdout
    rows, total = [], None
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        name = m.group(3)
        if name.strip() == "PROGRAM TOTALS":
            total = n
            continue
        rows.append((n, name))
    return total, rows


CALLER = re.compile(r"^\s*[\d,]+\s+\(\s*[\d.]+%\)\s+<\s+.*\(([\d,]+)x\)")
CALLEE = re.compile(r"^\s*[\d,]+\s+\(\s*[\d.]+%\)\s+\*\s+(.*)$")


def call_counts(path):
    """{function: calls} from the caller tree (sum over its callers)."""
    out = subprocess.run(
        ["callgrind_annotate", "--tree=caller", "--inclusive=yes", "--threshold=100", path],
        capture_output=True, text=True, check=True).stdout
    counts, pending = {}, 0
    for line in out.splitlines():
        m = CALLER.match(line)
        if m:
            pending += int(m.group(1).replace(",", ""))
            continue
        m = CALLEE.match(line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + pending
        pending = 0
    return counts


def calls(counts, pattern):
    return sum(n for name, n in counts.items() if re.search(pattern, name))


def main(dump, load_json):
    with open(load_json) as f:
        load = json.load(f)
    deliveries = load["window_subscriber_messages"]
    upstream = load["window_upstream_messages"]
    with open(dump) as f:
        text = re.sub(r"(?m)^calls=0 ", "calls=1 ", f.read())
    with tempfile.NamedTemporaryFile("w", suffix=".cg", delete=False) as t:
        t.write(text)
        fixed = t.name
    total, self_rows = annotate(fixed, False)
    _, incl_rows = annotate(fixed, True)
    counts = call_counts(fixed)
    sends = calls(counts, r"/send\.c:send \[")

    print(f"- load: {load['clients']} x {load['format']} subscribers, feed "
          f"{'as fast as possible' if load['rate'] == 0 else str(load['rate']) + ' msg/s'}; "
          f"window: {upstream:.0f} upstream messages, {deliveries:.0f} deliveries "
          f"({deliveries / max(upstream, 1):.1f} per upstream message)")
    print(f"- instructions in the window: {total:,} = **{total / deliveries:,.0f} per delivery**, "
          f"{total / max(upstream, 1):,.0f} per upstream message")
    if sends:
        print(f"- socket writes (libc `send`): {sends:,} = {deliveries / sends:.2f} frames per write; "
              f"{total / sends:,.0f} instructions per write. Batching depends on scheduling (valgrind runs "
              f"one thread at a time), so compare per write as well as per delivery; the kernel's cost of "
              f"each write is not in these counts.\n")
    else:
        print()

    if load.get("target") == "reference":
        # The categories and key functions below are wsgate's; list the top self costs only.
        top_self(self_rows, total)
        return

    cats = {name: 0 for name, _ in CATEGORIES}
    other = 0
    other_top = []
    for n, name in self_rows:
        for cname, pat in CATEGORIES:
            if re.search(pat, name):
                cats[cname] += n
                break
        else:
            other += n
            other_top.append((n, name))
    print("| self cost by category | % of instructions | instructions per delivery |")
    print("|---|---:|---:|")
    for cname, _ in sorted(CATEGORIES, key=lambda c: -cats[c[0]]):
        print(f"| {cname} | {cats[cname] / total * 100:.1f} % | {cats[cname] / deliveries:,.0f} |")
    print(f"| other | {other / total * 100:.1f} % | {other / deliveries:,.0f} |")
    other_top.sort(reverse=True)
    if other_top:
        parts = [f"{strip(nm)[:90]} {n / total * 100:.1f} %" for n, nm in other_top[:4]]
        print("\n(largest in \"other\": " + "; ".join(parts) + ")")

    print("\n| function (inclusive) | % of instructions | per delivery | per upstream message |")
    print("|---|---:|---:|---:|")
    for label, pat in KEY_FUNCTIONS:
        hits = [(n, nm) for n, nm in incl_rows if re.search(pat, nm)]
        if not hits:
            continue
        n = max(h[0] for h in hits)
        print(f"| {label} | {n / total * 100:.1f} % | {n / deliveries:,.0f} | {n / max(upstream, 1):,.0f} |")

    top_self(self_rows, total)


def top_self(self_rows, total):
    print("\nTop self costs:\n")
    print("| function (self) | % |")
    print("|---|---:|")
    for n, name in self_rows[:25]:
        nm = strip(name).replace("|", "\\|")
        print(f"| `{nm[:140]}` | {n / total * 100:.2f} % |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
