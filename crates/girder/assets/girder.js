// Signs the dashboard in by itself: one demo identity per browser tab, kept in
// sessionStorage, so every page works with one click. It asks for an operator token
// (to create demo events, centres and rules); a server with an operator password
// refuses that, and the page then acts as a plain demo user.
const girder = (() => {
  let pending = null;
  async function issue() {
    const json = { 'content-type': 'application/json' };
    let r = await fetch('/api/auth/demo', { method: 'POST', headers: json, body: JSON.stringify({ role: 'operator' }) });
    if (r.status === 403) r = await fetch('/api/auth/demo', { method: 'POST' });
    if (!r.ok) throw new Error(`sign-in failed: ${r.status}`);
    const t = await r.json();
    sessionStorage.setItem('girder-token', JSON.stringify(t));
    return t;
  }
  async function token() {
    const saved = sessionStorage.getItem('girder-token');
    if (saved) {
      const t = JSON.parse(saved);
      if (t.expires_at * 1000 > Date.now() + 60e3) return t;
    }
    if (!pending) pending = issue().finally(() => { pending = null; });
    return pending;
  }
  // fetch, with the caller's bearer token.
  async function api(url, options = {}) {
    const t = await token();
    const headers = { ...(options.headers || {}), authorization: 'Bearer ' + t.token };
    return fetch(url, { ...options, headers });
  }
  return { token, api };
})();
