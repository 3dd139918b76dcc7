// The checks of tests/accessibility.py, run in the page: window.deskChecks.contrast() and the rest.
(() => {
const FOCUSABLE = 'a[href], button, input, select, textarea, summary, iframe, [tabindex]';
function rendered(el) {
  if (!el.checkVisibility({checkOpacity: false, checkVisibilityCSS: true})) return false;
  const box = el.getBoundingClientRect();
  return box.width > 0 && box.height > 0;
}
function shown(el) {  // drawn where a reader can see it (a skip link waits off-screen until focused)
  const box = el.getBoundingClientRect();
  return rendered(el) && box.right > 0 && box.bottom > 0;
}
function scroller(el) {
  // Chromium (and Firefox) let the keyboard focus a box that scrolls and holds nothing focusable, so that
  // Tab can reach it and the arrows scroll it: a wide table in a narrow window.
  const style = getComputedStyle(el);
  const scrolls = ['auto', 'scroll'].some((value) => style.overflowX === value || style.overflowY === value);
  return scrolls && (el.scrollWidth > el.clientWidth || el.scrollHeight > el.clientHeight)
    && !el.querySelector(FOCUSABLE) && rendered(el);
}
function tabbable(el) {
  if (el.disabled || el.closest('[inert]') || (el.type === 'hidden')) return false;
  if (el.hasAttribute('tabindex') && el.tabIndex < 0) return false;
  if (el.tagName === 'SUMMARY' && el.parentElement.tagName !== 'DETAILS') return false;
  if (el.closest('details:not([open])') && el.tagName !== 'SUMMARY') return false;
  // Chromium moves into an iframe's document, never onto the frame itself: the frame's stops are its own.
  if (el.tagName === 'IFRAME') return false;
  if (el.type === 'radio' && el.name) {
    const group = [...document.querySelectorAll(`input[type=radio][name="${CSS.escape(el.name)}"]`)];
    const chosen = group.find((item) => item.checked) || group[0];
    if (chosen !== el) return false;
  }
  return el.tabIndex >= 0 && rendered(el);
}
function describe(el) {
  const text = (el.getAttribute('aria-label') || el.innerText || el.textContent || el.value || el.name || '').trim().slice(0, 40);
  return `<${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}> "${text}"`;
}
function rgba(text) {
  const parts = text.match(/[\d.]+/g);
  if (!parts) return [0, 0, 0, 0];
  const [r, g, b, a] = parts.map(Number);
  return [r, g, b, a === undefined ? 1 : a];
}
function over(top, bottom) {  // source-over compositing of two colours, the bottom one opaque
  const a = top[3];
  return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]);
}
function luminance(color) {  // WCAG 2.1 relative luminance
  const [r, g, b] = color.slice(0, 3).map((value) => {
    const s = value / 255;
    return s <= 0.04045 ? s / 12.92 : Math.pow((s + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function ratio(one, two) {
  const [light, dark] = [luminance(one), luminance(two)].sort((x, y) => y - x);
  return (light + 0.05) / (dark + 0.05);
}
function backdrop(el) {  // the colour behind `el`: its own and its ancestors' backgrounds, composited down to white
  const layers = [];
  for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
    const style = getComputedStyle(node);
    if (style.backgroundImage !== 'none') return null;  // an image or gradient: no single colour to measure
    const color = rgba(style.backgroundColor);
    if (color[3] > 0) layers.push(color);
    if (color[3] >= 1) break;
  }
  return layers.reverse().reduce((below, layer) => over(layer, below), [255, 255, 255, 1]);
}
window.deskChecks = {
contrast() {
  const found = [];
  const ownText = (el) => [...el.childNodes].some((node) => node.nodeType === 3 && node.textContent.trim());
  const candidates = [...document.body.querySelectorAll('*')].filter(
    (el) => (ownText(el) || (['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName) && el.value)) && shown(el));
  for (const el of candidates) {
    if (el.disabled || el.closest('[aria-hidden=true]') || ['SCRIPT', 'STYLE', 'OPTION'].includes(el.tagName)) continue;
    if (el.type === 'hidden' || el.type === 'file' || el.type === 'checkbox' || el.type === 'radio') continue;
    const style = getComputedStyle(el);
    const svg = el instanceof SVGElement;
    const back = backdrop(svg ? el.closest('svg').parentElement : el);
    if (back === null) continue;
    let opacity = 1;
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) opacity *= Number(getComputedStyle(node).opacity);
    const ink = rgba(svg ? style.fill : style.color);
    ink[3] *= opacity;
    const text = over(ink, back);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    const needed = large ? 3 : 4.5;
    const measured = ratio(text, back);
    if (measured < needed) {
      found.push(`${describe(el)}: contrast ${measured.toFixed(2)}:1 < ${needed}:1 (${style.color} on rgb(${back.slice(0, 3).map(Math.round)}))`);
    }
  }
  return found;
},
names() {
  const found = [];
  for (const el of document.querySelectorAll('input, select, textarea, button')) {
    if (el.type === 'hidden') continue;
    const byId = (ids) => ids.split(/\s+/).map((id) => document.getElementById(id)).filter(Boolean);
    const named = [
      el.getAttribute('aria-label'),
      el.hasAttribute('aria-labelledby') ? byId(el.getAttribute('aria-labelledby')).map((n) => n.textContent).join(' ') : '',
      [...(el.labels || [])].map((label) => label.textContent).join(' '),
      ['BUTTON'].includes(el.tagName) || ['submit', 'button', 'reset'].includes(el.type) ? (el.textContent || el.value) : '',
      el.getAttribute('title'),
    ].some((name) => name && name.trim());
    if (!named) found.push(`${describe(el)} has no accessible name (a label, aria-label or aria-labelledby)`);
  }
  for (const el of document.querySelectorAll('[tabindex]')) {
    if (el.tabIndex > 0) found.push(`${describe(el)} has a positive tabindex (${el.tabIndex}): it breaks the order`);
  }
  return found;
},
mark() {
  document.activeElement && document.activeElement.blur();
  const stops = [...document.body.querySelectorAll('*')].filter(
    (el) => (el.matches(FOCUSABLE) && tabbable(el)) || (!el.hasAttribute('tabindex') && scroller(el)));
  window.__unfocused = stops.map((el) => {
    const style = getComputedStyle(el);
    return [style.outlineStyle, style.outlineWidth, style.outlineColor, style.boxShadow].join('|');
  });
  stops.forEach((el, index) => el.setAttribute('data-tab-stop', String(index)));
  return stops.map(describe);
},
focused() {
  const el = document.activeElement;
  if (!el || el === document.body) return ['', true, ''];
  if (el.tagName === 'IFRAME') return ['frame', true, ''];
  const index = el.getAttribute('data-tab-stop');
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
  const look = [style.outlineStyle, style.outlineWidth, style.outlineColor, style.boxShadow].join('|');
  const visible = (outline || style.boxShadow !== 'none') && (index === null || look !== window.__unfocused[Number(index)]);
  return [index === null ? 'other' : index, visible, el.outerHTML.slice(0, 80)];
},
};
})();
