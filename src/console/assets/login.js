(() => {
  const pin = document.getElementById('pin');
  const err = document.getElementById('login-error');
  document.querySelectorAll('.key').forEach((b) => b.addEventListener('click', () => {
    const k = b.dataset.key;
    if (k === '清除') pin.value = '';
    else if (k === '←') pin.value = pin.value.slice(0, -1);
    else if (pin.value.length < 12) pin.value += k;
  }));
  async function login() {
    err.textContent = '';
    const body = JSON.stringify({ operator: document.getElementById('operator').value, pin: pin.value });
    const r = await fetch('/api/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    if (r.ok) { location.href = '/'; return; }
    const j = await r.json().catch(() => ({}));
    err.textContent = j.error || '登录失败';
    pin.value = '';
  }
  document.getElementById('login').addEventListener('click', login);
  pin.addEventListener('keydown', (e) => { if (e.key === 'Enter') login(); });
})();
