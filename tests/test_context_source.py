"""Traffic-source classification against real referrer URLs and tagged landing URLs."""

from __future__ import annotations

import pytest

from proxy.context.source import Source, classify_source
from proxy.context.sourcetable import load_table

TABLE = load_table()
HOST = "shop.example.com"

CASES = [
    # (referer, landing query, class, name, term)
    ("https://www.google.com/", "", "search", "google", ""),
    ("https://www.google.de/", "", "search", "google", ""),
    ("https://www.google.co.uk/search?q=running+shoes&sca_esv=1", "", "search", "google",
     "running shoes"),
    ("https://www.google.com.au/", "", "search", "google", ""),
    ("https://www.bing.com/search?q=kairos+edge+proxy&form=QBLH&sp=-1", "", "search", "bing",
     "kairos edge proxy"),
    ("https://cn.bing.com/search?q=%E8%B7%91%E9%9E%8B", "", "search", "bing", "跑鞋"),
    ("https://duckduckgo.com/", "", "search", "duckduckgo", ""),
    ("https://html.duckduckgo.com/html/?q=privacy+shoes", "", "search", "duckduckgo",
     "privacy shoes"),
    ("https://www.ecosia.org/search?method=index&q=vegan+sneakers", "", "search", "ecosia",
     "vegan sneakers"),
    ("https://search.yahoo.com/search?p=blue+widgets&fr=yfp-t", "", "search", "yahoo",
     "blue widgets"),
    ("https://r.search.yahoo.com/_ylt=AwrE/RV=2/RE=1700000000/RO=10/", "", "search", "yahoo", ""),
    ("https://yandex.ru/search/?text=%D0%BA%D1%80%D0%BE%D1%81%D1%81%D0%BE%D0%B2%D0%BA%D0%B8"
     "&lr=213", "", "search", "yandex", "кроссовки"),
    ("https://www.baidu.com/s?ie=utf-8&wd=%E8%BF%90%E5%8A%A8%E9%9E%8B", "", "search", "baidu",
     "运动鞋"),
    ("https://search.brave.com/search?q=edge+ab+testing", "", "search", "brave",
     "edge ab testing"),
    ("android-app://com.google.android.googlequicksearchbox/", "", "search", "google", ""),
    ("https://www.facebook.com/", "", "social", "facebook", ""),
    ("https://m.facebook.com/", "", "social", "facebook", ""),
    ("https://l.facebook.com/", "fbclid=IwAR2x9L3xYz", "social", "facebook", ""),
    ("https://lm.facebook.com/l.php?u=https%3A%2F%2Fshop.example.com%2F&h=AT0", "",
     "social", "facebook", ""),
    ("https://www.instagram.com/", "", "social", "instagram", ""),
    ("https://l.instagram.com/", "", "social", "instagram", ""),
    ("https://www.linkedin.com/", "", "social", "linkedin", ""),
    ("https://lnkd.in/eAbCdEf", "", "social", "linkedin", ""),
    ("https://t.co/4bXyZ1aBcD", "", "social", "twitter", ""),
    ("https://x.com/", "", "social", "twitter", ""),
    ("https://out.reddit.com/t3_1abc?url=https%3A%2F%2Fshop.example.com", "", "social",
     "reddit", ""),
    ("https://www.reddit.com/", "", "social", "reddit", ""),
    ("https://www.pinterest.de/", "", "social", "pinterest", ""),
    ("https://www.youtube.com/", "", "social", "youtube", ""),
    ("https://www.tiktok.com/", "", "social", "tiktok", ""),
    ("https://news.ycombinator.com/item?id=1", "", "social", "hackernews", ""),
    ("https://mail.google.com/", "", "email", "gmail", ""),
    ("https://outlook.live.com/", "", "email", "outlook", ""),
    ("https://outlook.office.com/", "", "email", "outlook", ""),
    ("https://mail.yahoo.com/d/folders/1", "", "email", "yahoo-mail", ""),
    ("https://mail.proton.me/", "", "email", "proton-mail", ""),
    ("android-app://com.google.android.gm/", "", "email", "gmail", ""),
    ("", "utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale", "email",
     "newsletter", ""),
    ("", "utm_source=mailchimp&utm_medium=Newsletter&utm_campaign=w12", "email", "mailchimp", ""),
    ("https://mail.google.com/", "utm_source=crm&utm_medium=email", "email", "crm", ""),
    ("", "gclid=Cj0KCQjw3tCyBhDBARIsAEY0XNm", "paid", "google-ads", ""),
    ("https://www.google.com/", "gbraid=0AAAAAoX&utm_source=google&utm_medium=cpc",
     "paid", "google-ads", ""),
    ("", "wbraid=CjkKCQjw", "paid", "google-ads", ""),
    ("https://www.bing.com/", "msclkid=5f1c6b9a&utm_source=bing&utm_medium=cpc&utm_term=shoes",
     "paid", "microsoft-ads", "shoes"),
    ("", "dclid=CKj0", "paid", "google-display", ""),
    ("", "ttclid=E.C.P.abc", "paid", "tiktok-ads", ""),
    ("", "li_fat_id=1a2b3c", "paid", "linkedin-ads", ""),
    ("https://l.facebook.com/", "fbclid=IwAR1&utm_source=facebook&utm_medium=paid_social",
     "paid", "facebook", ""),
    ("", "utm_source=criteo&utm_medium=display", "paid", "criteo", ""),
    ("", "utm_source=google&utm_medium=cpc&utm_campaign=brand&utm_term=kairos", "paid",
     "google", "kairos"),
    ("https://www.partner-blog.example/", "utm_source=partnerx&utm_medium=affiliate", "affiliate",
     "partnerx", ""),
    ("", "utm_source=awin&utm_medium=partner", "affiliate", "awin", ""),
    ("https://shop.example.com/products/shoes", "", "internal", "shop.example.com", ""),
    ("https://www.shop.example.com/", "", "internal", "www.shop.example.com", ""),
    ("", "", "direct", "", ""),
    ("", "page=2&sort=price", "direct", "", ""),
    ("https://blog.example.org/best-shoes-2025", "", "other", "blog.example.org", ""),
    ("https://chatgpt.com/", "", "other", "chatgpt.com", ""),
    ("", "fbclid=IwAR0", "social", "facebook", ""),
    ("", "utm_source=facebook", "social", "facebook", ""),
    ("", "utm_source=some-partner", "other", "some-partner", ""),
    ("not a url", "", "direct", "", ""),
    ("http://[::1", "", "direct", "", ""),
    ("javascript:alert(1)", "", "direct", "", ""),
    ("https://google.evil.example.com/", "", "other", "google.evil.example.com", ""),
]


@pytest.mark.parametrize(("referer", "query", "cls", "name", "term"), CASES)
def test_classification(referer: str, query: str, cls: str, name: str, term: str) -> None:
    source = classify_source(referer, query, HOST, TABLE)
    assert (source.cls, source.name, source.term) == (cls, name, term)


def test_engine_is_only_set_for_search() -> None:
    assert classify_source("https://www.bing.com/", "", HOST, TABLE).engine == "bing"
    assert classify_source("https://t.co/x", "", HOST, TABLE).engine == ""


def test_all_utm_parameters_and_campaign() -> None:
    query = ("utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale&utm_term=shoes"
             "&utm_content=hero-button&utm_id=42&utm_source_platform=braze&other=1")
    source = classify_source("", query, HOST, TABLE)
    assert source.campaign == "spring_sale" and source.medium == "email"
    assert dict(source.utm) == {"source": "newsletter", "medium": "email",
                                "campaign": "spring_sale", "term": "shoes",
                                "content": "hero-button", "id": "42",
                                "source_platform": "braze"}
    assert source.utm_value("content") == "hero-button" and source.utm_value("nope") == ""


def test_click_id_names_the_parameter_not_its_value() -> None:
    source = classify_source("", "gclid=SECRET123", HOST, TABLE)
    assert source.click_id == "gclid" and "SECRET123" not in repr(source)


def test_values_are_bounded_and_printable() -> None:
    query = "utm_campaign=a%0Ab&utm_source=" + "x" * 1000 + "&utm_term=" + "y" * 5000 + "&z=1"
    source = classify_source("", query, HOST, TABLE)
    assert source.name == "x" * 100 and source.campaign == "ab"
    assert source.term == "y" * 100  # and parsing stopped at 2 KB of query string


def test_label() -> None:
    assert classify_source("https://www.bing.com/", "", HOST, TABLE).label == "search/bing"
    assert Source().label == "direct"


def test_extra_entries_extend_and_override_the_table() -> None:
    table = load_table({
        "hosts": {"search.example.net": {"class": "search", "name": "examplesearch",
                                         "params": ["s"]},
                  "t.co": {"class": "other", "name": "shortener"}},
        "mediums": {"push": "other", "sms": "email"},
        "click_ids": {"my_click": "my-network"},
        "link_ids": {"nl_id": "email/house-newsletter"},
    })
    assert (classify_source("https://search.example.net/?s=hats", "", HOST, table).term
            == "hats")
    assert classify_source("https://t.co/x", "", HOST, table).cls == "other"
    assert classify_source("", "utm_source=x&utm_medium=sms", HOST, table).cls == "email"
    assert classify_source("", "my_click=1", HOST, table).name == "my-network"
    assert classify_source("", "nl_id=7", HOST, table).name == "house-newsletter"
    # the built-in entries are still there
    assert classify_source("https://www.bing.com/", "", HOST, table).cls == "search"
    assert classify_source("https://t.co/x", "", HOST, TABLE).cls == "social"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"hosts": {"bad host!": {"class": "search", "name": "x"}}}, "hosts.'bad host!'"),
        ({"hosts": {"a.example": {"class": "tv", "name": "x"}}}, "'tv' is not valid"),
        ({"hosts": {"a.example": {"class": "search"}}}, "name = None"),
        ({"hosts": {"a.example": {"class": "search", "name": "x", "params": "q"}}},
         "params = 'q'"),
        ({"hosts": {"a.example": {"class": "search", "name": "x", "color": 1}}}, "color"),
        ({"hosts": {"a.b.*": {"class": "search", "name": "x"}}}, "one label"),
        ({"mediums": {"tv": "direct"}}, "mediums.tv = 'direct'"),
        ({"click_ids": {"x": ""}}, "click_ids.x = ''"),
        ({"link_ids": {"x": "nothing"}}, "link_ids.x"),
        ({"channels": {}}, "channels is not a known table"),
        ({"hosts": ["a"]}, "hosts = ['a']"),
    ],
)
def test_bad_extra_entries_name_the_key(extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=r"context\.sources") as info:
        load_table(extra)
    assert message in str(info.value)
