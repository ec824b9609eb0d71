"""Layout checks in the browser: what a person would call "cut off", measured with bounding boxes.

An element is cut off when it reaches past the right edge of the panel or of the viewport, or when it scrolls
its content sideways (``scrollWidth > clientWidth`` on an element that hides or scrolls overflow). plotly's own
SVG internals are left out (the plot's container is checked instead).
"""

from __future__ import annotations

from typing import Any

CUT_OFF_JS = """(selector) => {
  const panel = document.querySelector(selector);
  const viewport = document.documentElement.clientWidth;
  const edge = Math.min(viewport, panel.getBoundingClientRect().right) + 1;
  const name = (el) => el.tagName.toLowerCase() + '.' + String(el.getAttribute('class') || '').split(' ')
      .filter(c => c.startsWith('tb-') || c.startsWith('widget-')).join('.');
  const problems = [];
  for (const el of panel.querySelectorAll('*')) {
    if (el.closest('.js-plotly-plot') && !el.classList.contains('js-plotly-plot')) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    if (r.right > edge) problems.push(`${name(el)} reaches ${Math.round(r.right)} px, past ${Math.round(edge)} px`);
    const overflow = getComputedStyle(el).overflowX;
    if (overflow !== 'visible' && el.scrollWidth > el.clientWidth + 1)
      problems.push(`${name(el)} cuts its content: ${el.scrollWidth} px in ${el.clientWidth} px`);
  }
  return problems;
}"""


def cut_off(page: Any, selector: str) -> list[str]:
    """Every element inside ``selector`` that is cut off (empty: nothing is)."""
    return list(page.evaluate(CUT_OFF_JS, selector))


def inside_viewport(page: Any, locator: Any) -> bool:
    """Whether the element is whole inside the viewport's width (and has a size)."""
    box = locator.bounding_box()
    width = page.evaluate("() => document.documentElement.clientWidth")
    return bool(box and box["width"] > 0 and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5)


WHOLE_JS = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  el.scrollIntoView({block: 'nearest', inline: 'nearest'});
  const r = el.getBoundingClientRect();
  const width = document.documentElement.clientWidth, height = document.documentElement.clientHeight;
  return r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= width + 0.5 && r.top >= 0
      && r.bottom <= height + 0.5;
}"""


def whole_in_viewport(page: Any, selector: str) -> bool | None:
    """Scroll the first element matching ``selector`` into view and tell whether it is whole in the viewport (None:
    no such element). One evaluation in the page: fit for elements a push re-renders at any moment (the positions
    table), which a locator's scroll-then-measure could find detached in between."""
    result = page.evaluate(WHOLE_JS, selector)
    return None if result is None else bool(result)
