"""The look of the email and web page: colours for light and dark mode, font stacks, footer wording."""

from __future__ import annotations

from types import MappingProxyType

BODY_WIDTH_PX = 600
CONTENT_WIDTH_PX = BODY_WIDTH_PX - 2 * 24  # the card's side padding

# Every text colour is paired with the background it sits on; tests check the contrast of each pair as
# written, as a client's dark mode would invert it, and in the dark palette.
LIGHT = MappingProxyType(
    {
        "page_background": "#f3f4f6",
        "background": "#ffffff",
        "text": "#1f2328",
        "heading": "#111418",
        "link": "#0a58a8",
        "muted": "#57606a",
        "rule": "#d0d7de",
        "quote_background": "#f6f8fa",
        "quote_text": "#3d444d",
        "code_background": "#eff1f3",
    }
)
DARK = MappingProxyType(
    {
        "page_background": "#0d1117",
        "background": "#161b22",
        "text": "#e6edf3",
        "heading": "#f0f6fc",
        "link": "#79b8ff",
        "muted": "#9da7b3",
        "rule": "#3d444d",
        "quote_background": "#1f252d",
        "quote_text": "#c9d1d9",
        "code_background": "#262c36",
    }
)
TEXT_PAIRS = (
    ("text", "background"),
    ("heading", "background"),
    ("link", "background"),
    ("muted", "background"),
    ("muted", "page_background"),
    ("quote_text", "quote_background"),
    ("text", "code_background"),
    ("link", "quote_background"),
)

FONTS = MappingProxyType(
    {
        # Latin faces first so Latin letters keep their shapes, then the CJK system faces of each platform.
        "text": "-apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, 'PingFang SC', "
        "'Hiragino Sans GB', 'Microsoft YaHei', 'Noto Sans CJK SC', 'Source Han Sans SC', "
        "'WenQuanYi Micro Hei', sans-serif",
        "code": "Menlo, Consolas, 'SFMono-Regular', 'Liberation Mono', 'Courier New', monospace",
    }
)

WORDS = {
    "en": MappingProxyType(
        {
            "why": "You are receiving this email because you subscribed to {name}. It was sent to {email}.",
            "unsubscribe": "Unsubscribe",
            "preferences": "Manage subscription",
            "view_in_browser": "View in browser",
            "text_unsubscribe": "Unsubscribe",
            "text_preferences": "Manage subscription",
            "text_view": "Read online",
        }
    ),
    "zh": MappingProxyType(
        {
            "why": "您收到这封邮件，是因为您订阅了「{name}」。本邮件发送至 {email}。",
            "unsubscribe": "退订",
            "preferences": "管理订阅",
            "view_in_browser": "在浏览器中查看",
            "text_unsubscribe": "退订",
            "text_preferences": "管理订阅",
            "text_view": "在线阅读",
        }
    ),
}


def words_for(lang: str) -> MappingProxyType[str, str]:
    """The footer wording in the issue's language, English when there is none for it."""
    return WORDS.get(lang.split("-")[0].lower(), WORDS["en"])
