"""Benchmark the visitor context: build_context for 10,000 realistic requests.

    .venv/bin/python bench/bench_context.py [--requests 10000] [--seed 1]

Traffic: ~2,000 visitors with a few hundred distinct User-Agents (browsers of many versions
and crawlers from the crawler-user-agents data set) and thousands of public IPv4/IPv6
addresses, each making a Zipf-ish number of page views with referrers, UTM links and
visitor cookies carried between requests. Geo uses the bundled 2015 GeoLite2 file.

Prints per-request cost (median / p99 in µs) of build_context alone and of the full cookie
round trip (decode + build + encode), the geo lookup of a /24 not seen before (through the
memo of larger networks, and decoded every time), and the device classification cost for a
UA not seen before vs a repeat, next to the libraries it was chosen over. No asserts: it
measures.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.context import device
from proxy.context.build import build_context
from proxy.context.geo import GeoReader, open_reader
from proxy.context.identity import decode, encode
from proxy.context.model import RequestFacts
from proxy.context.settings import parse_settings
from proxy.context.signals import parse_signal_hash

KEY = "bench-secret-0123456789abcdef"
PATHS = ["/", "/products/shoes/trail-42", "/products/bags/tote", "/products/", "/blog/running",
         "/checkout/cart", "/checkout/pay", "/checkout/complete", "/about", "/search"]
REFERRERS = ["", "", "", "https://www.google.com/", "https://www.google.de/",
             "https://www.bing.com/search?q=trail+shoes", "https://duckduckgo.com/",
             "https://l.facebook.com/", "https://t.co/abc", "https://www.linkedin.com/",
             "https://mail.google.com/", "https://blog.example.org/review"]
QUERIES = ["", "", "", "", "utm_source=newsletter&utm_medium=email&utm_campaign=xmas",
           "gclid=Cj0KCQjw", "msclkid=abc&utm_source=bing&utm_medium=cpc", "fbclid=IwAR0",
           "page=2"]
LANGUAGES = ["de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7", "en-US,en;q=0.9", "en-GB,en;q=0.9",
             "fr-FR,fr;q=0.9,en;q=0.8", "es-ES,es;q=0.9", "nl", "ja,en;q=0.8", ""]


def user_agents(rng: random.Random, count: int) -> list[str]:
    """Realistic, mostly distinct UAs: browser templates x versions, plus real crawlers."""
    templates = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.{b}.{p} Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.{b}.{p}",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.{p} Safari/605.1.15",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.{b}.{p} Safari/537.36",
        "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{p} like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/17.{p} Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{p} like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) CriOS/{v}.0.{b}.{p} Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android {a}; SM-S9{p}1B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.{b}.{p} Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android {a}; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Linux; Android {a}; SAMSUNG SM-A5{p}5F) AppleWebKit/537.36 (KHTML, like "
        "Gecko) SamsungBrowser/2{p}.0 Chrome/{v}.0.0.0 Mobile Safari/537.36",
        "Mozilla/5.0 (iPad; CPU OS 17_{p} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.{p} Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (Linux; Android {a}; SM-X7{p}0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/{v}.0.0.0 Safari/537.36",
    ]
    found: set[str] = set()
    while len(found) < count:
        found.add(rng.choice(templates).format(
            v=rng.randint(110, 131), b=rng.randint(1000, 7000), p=rng.randint(0, 9),
            a=rng.randint(10, 15)))
    data = json.loads(resources.files("crawleruseragents").joinpath(
        "crawler-user-agents.json").read_text(encoding="utf-8"))
    crawlers = [ua for item in data for ua in item["instances"][:1]]
    return sorted(found) + rng.sample(crawlers, 40)


def public_ips(rng: random.Random, count: int) -> list[str]:
    ips: list[str] = []
    while len(ips) < count:
        if rng.random() < 0.15:
            ips.append(f"2a0{rng.randint(0, 9)}:{rng.randint(0, 0xffff):x}::{rng.randint(1, 999)}")
            continue
        first = rng.choice([2, 5, 31, 46, 62, 77, 78, 80, 81, 82, 85, 87, 88, 91, 93, 95, 109,
                            176, 178, 185, 188, 193, 194, 195, 212, 213, 217, 8, 12, 24, 50,
                            64, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 96, 97, 98, 99,
                            1, 14, 27, 36, 39, 42, 49, 58, 101, 110, 111, 112, 113, 114, 115,
                            116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 200, 201])
        ips.append(f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
    return ips


def stats(samples_ns: Iterable[int]) -> str:
    ordered = sorted(samples_ns)
    median = statistics.median(ordered) / 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
    return f"median {median:8.2f} µs   p99 {p99:8.2f} µs   (n={len(ordered)})"


def timed(fn: Callable[[str], object], inputs: list[str]) -> list[int]:
    out = []
    for item in inputs:
        start = time.perf_counter_ns()
        fn(item)
        out.append(time.perf_counter_ns() - start)
    return out


def bench_devices(uas: list[str]) -> None:
    print("\nDevice classification (distinct UAs, each first seen, then repeated):")
    device._classify_cached.cache_clear()
    print(f"  kairos, unseen              {stats(timed(device.classify, uas))}")
    print(f"  kairos, repeat (LRU hit)    {stats(timed(device.classify, uas))}")
    print(f"  kairos, uncached rules only {stats(timed(device.classify_uncached, uas))}")
    try:
        from ua_parser import Domain, load_lazy_builtins
        from ua_parser.regex import Resolver
    except ImportError:
        print("  ua-parser + ua-parser-rs    not installed")
    else:
        resolver = Resolver(load_lazy_builtins())
        resolver(uas[0], Domain.ALL)  # build the automaton outside the timing
        print(f"  ua-parser-rs, all domains   "
              f"{stats(timed(lambda u: resolver(u, Domain.ALL), uas))}")
    try:
        import user_agents
    except ImportError:
        print("  user-agents                 not installed")
    else:
        sample = uas[:300]
        print(f"  user-agents (300 UAs)       {stats(timed(user_agents.parse, sample))}")


def neighbouring_slash24s(count: int) -> list[str]:
    """Addresses as bench/personalised.lua sends them: the first octet taken in turn, the
    next two counting up, so every request is a new /24 and neighbours share networks."""
    firsts = [5, 24, 31, 46, 62, 77, 81, 88, 93, 109, 151, 176, 188, 193, 212, 217]
    return [f"{firsts[n % len(firsts)]}.{n // len(firsts) // 256 % 256}."
            f"{n // len(firsts) % 256}.{n % 254 + 1}" for n in range(count)]


def bench_geo(path: str, rng: random.Random) -> None:
    print("\nGeo lookup, every /24 new (a City record costs ~16 µs to decode):")
    scattered = [f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.7"
                 for _ in range(5000)]
    for label, ips in (("neighbouring /24s", neighbouring_slash24s(5000)),
                       ("scattered /24s", scattered)):
        reader = GeoReader(path)
        print(f"  {label:18s} lookup  {stats(timed(reader.lookup, ips))}")
        print(f"  {label:18s} decode  {stats(timed(GeoReader(path)._decode, ips))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rng = random.Random(args.seed)

    t0 = time.perf_counter()
    settings = parse_settings({"interests": {"shoes": ["/products/shoes*"],
                                             "bags": ["/products/bags*"]}})
    reader = open_reader("")
    signals = parse_signal_hash({b"weather.berlin": b"rain", b"stock.low": b"true"})
    print(f"start-up (settings + geo reader): {(time.perf_counter() - t0) * 1000:.0f} ms")

    uas = user_agents(rng, 400)
    ips = public_ips(rng, 6000)
    visitors = [(rng.choice(uas), rng.choice(ips), rng.choice(LANGUAGES)) for _ in range(2000)]
    weights = [1 / (i + 1) ** 0.8 for i in range(len(visitors))]
    cookies: dict[int, str] = {}
    build_ns: list[int] = []
    round_trip_ns: list[int] = []
    now = time.time()
    for n in range(args.requests):
        who = rng.choices(range(len(visitors)), weights)[0]
        ua, ip, lang = visitors[who]
        facts = RequestFacts(
            client_ip=ip, peer_trusted=False, method="GET", scheme="https",
            host="shop.example.com", path=rng.choice(PATHS), query_string=rng.choice(QUERIES),
            user_agent=ua, referer=rng.choice(REFERRERS), accept_language=lang,
            sec_gpc="1" if who % 17 == 0 else "",
        )
        at = now + n * 0.5
        start = time.perf_counter_ns()
        state = decode(cookies.get(who), (KEY,), at)
        mid = time.perf_counter_ns()
        ctx = build_context(facts, state, settings, at, reader, signals)
        built = time.perf_counter_ns()
        if ctx.cookie_state is not None:
            cookies[who] = encode(ctx.cookie_state, KEY)
        end = time.perf_counter_ns()
        build_ns.append(built - mid)
        round_trip_ns.append(end - start)

    print(f"\n{args.requests} requests, {len(uas)} distinct UAs, {len(ips)} IPs, "
          f"{len(visitors)} visitors")
    print(f"  build_context               {stats(build_ns)}")
    print(f"  decode + build + encode     {stats(round_trip_ns)}")
    print(f"  device LRU: {device.cache_info()}")
    if reader is not None:
        bench_geo(reader.path, random.Random(args.seed + 2))
    bench_devices(user_agents(random.Random(args.seed + 1), 3000))


if __name__ == "__main__":
    main()
