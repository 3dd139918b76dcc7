"""The look of the email and web page: colours for light and dark mode, font stacks, footer wording."""

from __future__ import annotations

from types import MappingProxyType

from newsletter import language

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

N_ = language.N_
# The footer's words, translated by the gettext catalogs (newsletter/locale/); {name} and {email} are
# filled by the renderer.
WORDS = MappingProxyType(
    {
        "why": N_("You are receiving this email because you subscribed to {name}. It was sent to {email}."),
        "unsubscribe": N_("Unsubscribe"),
        "preferences": N_("Manage subscription"),
        "view_in_browser": N_("View in browser"),
        "text_unsubscribe": N_("Unsubscribe"),
        "text_preferences": N_("Manage subscription"),
        "text_view": N_("Read online"),
    }
)


def words_for(lang: str) -> MappingProxyType[str, str]:
    """The footer wording in the issue's language, English when there is no catalog for it."""
    translations = language.translations(language.choose(lang))
    return MappingProxyType({key: translations.gettext(message) for key, message in WORDS.items()})
