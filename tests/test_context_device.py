"""Device classification against real User-Agent strings, and crawler detection."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from proxy.context import device
from proxy.context.botmatch import BotMatcher, _expand
from proxy.context.device import Device, classify, classify_uncached

BROWSERS = [
    # phones
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     "like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1", "mobile", "Safari", "iOS"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) CriOS/123.0.6312.52 Mobile/15E148 Safari/604.1", "mobile", "Chrome", "iOS"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) FxiOS/124.0 Mobile/15E148 Safari/605.1.15", "mobile", "Firefox", "iOS"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_3_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
     "like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/452.0.0.39.110;FBBV/565043420;FBDV/iPhone15,2;"
     "FBMD/iPhone;FBSN/iOS;FBSV/17.3.1;FBSS/3;FBID/phone;FBLC/de_DE;FBOP/5]",
     "mobile", "Facebook", "iOS"),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Mobile Safari/537.36", "mobile", "Chrome", "Android"),
    ("Mozilla/5.0 (Linux; Android 14; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/123.0.6312.99 Mobile Safari/537.36", "mobile", "Chrome", "Android"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.6367.54 Mobile Safari/537.36", "mobile", "Chrome", "Android"),
    ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
     "mobile", "Samsung Internet", "Android"),
    ("Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
     "mobile", "Firefox", "Android"),
    ("Mozilla/5.0 (Linux; Android 10; VOG-L29) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/118.0.0.0 Mobile Safari/537.36 OPR/76.2.4027.73374", "mobile", "Opera", "Android"),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Mobile Safari/537.36 EdgA/124.0.2478.64", "mobile", "Edge", "Android"),
    # tablets
    ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/16.6 Mobile/15E148 Safari/604.1", "tablet", "Safari", "iOS"),
    ("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "CriOS/123.0.6312.52 Mobile/15E148 Safari/604.1", "tablet", "Chrome", "iOS"),
    ("Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/123.0.0.0 Safari/537.36", "tablet", "Chrome", "Android"),
    ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", "tablet", "Chrome", "Android"),
    ("Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/23.0 Chrome/115.0.0.0 Safari/537.36", "tablet", "Samsung Internet",
     "Android"),
    ("Mozilla/5.0 (Android 13; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0",
     "tablet", "Firefox", "Android"),
    ("Mozilla/5.0 (Linux; Android 9; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Silk/123.3.1 like Chrome/123.0.6312.99 Safari/537.36", "tablet", "Silk", "Android"),
    # desktops
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", "desktop", "Chrome", "Windows"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
     "desktop", "Firefox", "Windows"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51", "desktop", "Edge", "Windows"),
    ("Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
     "desktop", "Internet Explorer", "Windows"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/120.0.0.0 Safari/537.36 OPR/106.0.0.0", "desktop", "Opera", "Windows"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4.1 Safari/605.1.15", "desktop", "Safari", "macOS"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", "desktop", "Chrome", "macOS"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0",
     "desktop", "Firefox", "macOS"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0", "desktop", "Edge", "macOS"),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
     "desktop", "Firefox", "Linux"),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
     "desktop", "Firefox", "Linux"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", "desktop", "Chrome", "Linux"),
    ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0.0.0 Safari/537.36", "desktop", "Chrome", "Chrome OS"),
    # iPadOS 13+ Safari sends a macOS UA: documented limit, it counts as desktop.
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.4 Safari/605.1.15", "desktop", "Safari", "macOS"),
]

CRAWLERS = [
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Googlebot"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; "
     "+http://www.google.com/bot.html) Chrome/124.0.6367.118 Safari/537.36", "Googlebot"),
    ("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like "
     "Gecko) Chrome/124.0.6367.118 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
     "+http://www.google.com/bot.html)", "Googlebot"),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "bingbot"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
     "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36", "bingbot"),
    ("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", "DuckDuckBot"),
    ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", "YandexBot"),
    ("Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
     "Baiduspider"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
     "Applebot"),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
     "facebookexternalhit"),
    ("Twitterbot/1.0", "Twitterbot"),
    ("LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
     "LinkedInBot"),
    ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "Slackbot"),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", "AhrefsBot"),
    ("Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
     "SemrushBot"),
    ("Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)", "MJ12bot"),
    ("Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
     "Safari/537.36 (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
     "PetalBot"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
     "+https://openai.com/gptbot)", "GPTBot"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; "
     "+claudebot@anthropic.com)", "ClaudeBot"),
    ("CCBot/2.0 (https://commoncrawl.org/faq/)", "CCBot"),
    ("Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
     "Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)", "Bytespider"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Amazonbot/0.1; "
     "+https://developer.amazon.com/support/amazonbot) Chrome/119.0.6045.214 Safari/537.36",
     "Amazonbot"),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; "
     "+https://perplexity.ai/perplexitybot)", "PerplexityBot"),
    ("curl/8.5.0", "curl"),
    ("Wget/1.21.4", "Wget"),
    ("python-requests/2.31.0", "python-requests"),
    ("python-httpx/0.27.0", "python-httpx"),
    ("Go-http-client/1.1", "Go-http-client"),
    ("okhttp/4.12.0", "okhttp"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/124.0.0.0 Safari/537.36", "HeadlessChrome"),
    ("", "no user agent"),
]


@pytest.mark.parametrize(("ua", "kind", "browser", "os"), BROWSERS)
def test_browsers(ua: str, kind: str, browser: str, os: str) -> None:
    assert classify(ua) == Device(kind, browser, os)


@pytest.mark.parametrize(("ua", "name"), CRAWLERS)
def test_crawlers(ua: str, name: str) -> None:
    found = classify(ua)
    assert found.kind == "bot"
    assert name.lower() in found.bot.lower()


def test_at_least_twenty_distinct_crawlers_are_covered() -> None:
    assert len({name for _, name in CRAWLERS}) >= 20


def test_every_instance_in_the_crawler_data_set_is_a_bot() -> None:
    path = resources.files("crawleruseragents").joinpath("crawler-user-agents.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    instances = [ua for item in data for ua in item["instances"]]
    assert len(instances) > 1000
    missed = [ua for ua in instances if classify_uncached(ua).kind != "bot"]
    assert missed == []


def test_the_matcher_uses_the_data_set_not_only_known_names() -> None:
    # "Cliqzbot" is in the data set but not in KNOWN_CRAWLERS.
    assert BotMatcher([]).match("Mozilla/5.0 (compatible; Cliqzbot/3.0)") == ""
    assert device.classify_uncached("Mozilla/5.0 (compatible; Cliqzbot/3.0)").kind == "bot"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("Googlebot\\/", (False, False, ["Googlebot/"])),
        ("[wW]get", (False, False, ["wget", "Wget"])),
        ("^curl", (True, False, ["curl"])),
        ("SSL Labs$", (False, True, ["SSL Labs"])),
        ("Ahrefs(Bot|SiteAudit)", (False, False, ["AhrefsBot", "AhrefsSiteAudit"])),
        ("BlogTraffic\\/\\d\\.\\d+ Feed-Fetcher", None),
        ("AdsBot-Google([^-]|$)", None),
    ],
)
def test_pattern_expansion(pattern: str, expected: object) -> None:
    assert _expand(pattern) == expected


def test_regex_only_patterns_still_match() -> None:
    matcher = BotMatcher(["BlogTraffic\\/\\d\\.\\d+ Feed-Fetcher", "AdsBot-Google([^-]|$)"])
    assert matcher.match("BlogTraffic/1.42 Feed-Fetcher")
    assert matcher.match("AdsBot-Google (+http://www.google.com/adsbot.html)")
    only_regex = BotMatcher(["Xyzzy-Fetch([^-]|$)"])
    assert only_regex.match("Xyzzy-Fetch/1.0")
    assert only_regex.match("Mozilla/5.0 Xyzzy-Fetch")
    assert only_regex.match("Mozilla/5.0 Xyzzy-Fetch-Preview") == ""


def test_garbage_and_huge_user_agents_do_not_raise() -> None:
    for ua in ("\x00\x01\x02", "()()()", "Mozilla/5.0 (" * 2000, "é" * 10_000, "   "):
        assert classify(ua).kind in {"mobile", "tablet", "desktop", "bot"}


def test_cache_is_bounded_and_hit_on_repeat() -> None:
    info = device.cache_info()
    assert info.maxsize == 10_000  # type: ignore[attr-defined]
    ua = BROWSERS[0][0] + " repeat-test"
    classify(ua)
    hits = device.cache_info().hits  # type: ignore[attr-defined]
    classify(ua)
    assert device.cache_info().hits == hits + 1  # type: ignore[attr-defined]
