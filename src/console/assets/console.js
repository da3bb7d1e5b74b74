(() => {
  const $ = (id) => document.getElementById(id);
  const post = async (url, data) => {
    const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(data) });
    if (r.status === 401) { location.href = '/login'; return { ok: false, body: {} }; }
    return { ok: r.ok, status: r.status, body: await r.json().catch(() => ({})) };
  };
  const act = async (action, value) => {
    $('action-error').textContent = '';
    const r = await post('/api/action', { action, value: value || '' });
    if (!r.ok) $('action-error').textContent = r.body.error || '操作失败';
  };
  // Measured in the browser: from the decision's timestamp to the panel showing it.
  window.__panelLatencies = [];
  let lastUpdate = -1, lastDecided = 0, lastCard = null;
  function render(live) {
    const p = live.panel, g = live.gate;
    lastCard = p.card || null;
    $('tier').textContent = g.tier_zh || '—';
    $('tier').className = 'tier tier-' + (g.tier || 'none');
    // "自 2026-11-26" (and the hour when a change did not start at midnight).
    const since = g.tier_since || '', hm = since.slice(11, 16);
    $('tier-since').textContent = since ? '自 ' + since.slice(0, 10) + (hm && hm !== '00:00' ? ' ' + hm : '') : '';
    // A glance: 设备正常, or only the devices that are down, in red.
    const bad = Object.entries(g.devices || {}).filter(([, ok]) => !ok);
    $('devices').innerHTML = '';
    for (const [name] of bad) {
      const s = document.createElement('span');
      s.className = 'dev bad';
      s.textContent = name + '故障 ';
      $('devices').appendChild(s);
    }
    if (bad.length === 0) $('devices').textContent = '设备正常';
    if (p.update === lastUpdate) return;
    lastUpdate = p.update;
    const state = p.state || 'idle';
    $('panel').className = 'state-' + state;
    $('panel').dataset.presentation = p.presentation ?? '';
    $('panel').dataset.rule = p.rule || '';
    $('headline').textContent = p.headline || '等待';
    $('message').textContent = p.message || '请出示健康码或通行证';
    $('prompt').textContent = p.prompt && p.prompt !== p.message ? p.prompt : '';
    $('musts').innerHTML = '';
    for (const m of p.musts || []) {
      const li = document.createElement('li');
      li.dataset.ok = m.ok; li.textContent = m.by ? m.name + '（' + m.by + '）' : m.name;
      $('musts').appendChild(li);
    }
    $('holder').textContent = p.holder || '';
    $('temperature').textContent = p.temperature ? '体温 ' + p.temperature : '';
    $('actions').innerHTML = '';
    for (const a of p.actions || []) {
      const li = document.createElement('li'); li.textContent = a; $('actions').appendChild(li);
    }
    $('btn-remeasure').hidden = !p.fever;
    $('btn-colour').classList.toggle('warn', !!p.colour_check);
    const v = p.vehicle;
    $('vehicle').hidden = !v;
    $('btn-vehicle-finish').hidden = !v;
    if (v) $('vehicle').textContent = `车辆 ${v.plate}（${v.category}）：已检查 ${v.decided}/${v.expected} 人`;
    if (p.decided_at_ms && p.decided_at_ms !== lastDecided) {
      lastDecided = p.decided_at_ms;
      window.__panelLatencies.push(Date.now() - p.decided_at_ms);
      setTimeout(status, 300);
    }
  }
  const es = new EventSource('/events');
  es.addEventListener('live', (e) => render(JSON.parse(e.data)));
  es.onerror = () => { $('action-error').textContent = '与闸口程序的连接中断，正在重连…'; };
  es.onopen = () => { $('action-error').textContent = ''; };
  async function status() {
    const r = await fetch('/api/status');
    if (r.status === 401) { location.href = '/login'; return; }
    if (!r.ok) return;
    const s = await r.json();
    $('sync').textContent = `待上传 ${s.backlog}` + (s.last_contact ? ` · 联系 ${s.last_contact.slice(5, 16).replace('T', ' ')}` : ' · 未联系街道办');
    const t = s.today || {};
    $('today').textContent = `今日 通行 ${t.pass || 0} 禁止 ${t.deny || 0} 待处理 ${t.refer || 0}`;
  }
  status(); setInterval(status, 5000);
  const open = (id) => $(id).showModal();
  document.querySelectorAll('dialog [data-close]').forEach((b) => b.addEventListener('click', () => b.closest('dialog').close()));
  $('btn-mask').addEventListener('click', () => act('mask', 'worn'));
  $('btn-remeasure').addEventListener('click', () => act('remeasure'));
  $('btn-cancel').addEventListener('click', () => act('cancel'));
  $('btn-colour').addEventListener('click', () => open('dlg-colour'));
  $('btn-emergency').addEventListener('click', () => open('dlg-emergency'));
  // After an ID card tap the card has given name and number: the form shows them masked and asks only the rest.
  function fillFromCard(f) {
    const c = lastCard;
    f.from_card.value = c ? 'true' : '';
    f.name.readOnly = !!c; f.id_number.disabled = !!c;
    $('card-note').hidden = !c;
    if (!c) return;
    f.name.value = c.name; f.id_number.value = c.id;
    $('card-note').textContent = `已读取身份证：${c.name} ${c.id}，请填写去往和事由（手机号选填）`;
    if (c.destination) { f.destination.value = c.destination; f.category.value = 'resident'; }
  }
  function resetRegister(f) {
    f.reset(); f.category.value = 'visitor'; f.from_card.value = '';
    f.name.readOnly = false; f.id_number.disabled = false; $('card-note').hidden = true;
  }
  $('btn-register').addEventListener('click', () => {
    const f = $('form-register');
    clearErrors(f); fillFromCard(f); open('dlg-register');
  });
  $('btn-vehicle').addEventListener('click', () => { clearErrors($('form-vehicle')); open('dlg-vehicle'); });
  $('btn-vehicle-finish').addEventListener('click', () => post('/api/vehicle', { step: 'finish' }));
  document.querySelectorAll('#dlg-colour [data-colour]').forEach((b) => b.addEventListener('click', async () => {
    $('dlg-colour').close(); await act('colour', b.dataset.colour);
  }));
  document.querySelectorAll('#dlg-emergency [data-kind]').forEach((b) => b.addEventListener('click', async () => {
    $('dlg-emergency').close(); await act('emergency', b.dataset.kind);
  }));
  function clearErrors(form) { form.querySelectorAll('.error').forEach((e) => { e.textContent = ''; }); }
  function showErrors(form, errors) {
    clearErrors(form);
    for (const [field, msg] of Object.entries(errors || {})) {
      const e = form.querySelector(`.error[data-for="${field}"]`);
      if (e) e.textContent = msg;
    }
  }
  $('form-register').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target, data = Object.fromEntries(new FormData(f));
    data.from_card = data.from_card === 'true';
    const r = await post('/api/register', data);
    if (r.ok) { resetRegister(f); $('roster-results').innerHTML = ''; $('dlg-register').close(); }
    else showErrors(f, r.body.errors || { name: r.body.error });
  });
  $('roster-find').addEventListener('click', async () => {
    const q = new URLSearchParams({ building: $('roster-building').value, room: $('roster-room').value });
    const r = await fetch('/api/roster?' + q);
    const list = r.ok ? await r.json() : [];
    $('roster-results').innerHTML = list.length ? '' : '<li>没有找到</li>';
    for (const p of list) {
      const li = document.createElement('li'), b = document.createElement('button');
      b.type = 'button'; b.textContent = `${p.building}栋${p.room} ${p.name}`;
      b.addEventListener('click', () => {
        const f = $('form-register');
        f.name.value = p.name; f.destination.value = `${p.building}栋${p.room}`;
        f.reason.value = '本小区居民'; f.category.value = 'resident';
      });
      li.appendChild(b); $('roster-results').appendChild(li);
    }
  });
  $('form-vehicle').addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = e.target, data = Object.fromEntries(new FormData(f));
    data.occupants = parseInt(data.occupants, 10) || 0; data.step = 'start';
    const r = await post('/api/vehicle', data);
    if (r.ok) { f.reset(); $('dlg-vehicle').close(); } else showErrors(f, r.body.errors || { plate: r.body.error });
  });
  $('logout').addEventListener('click', async () => { await post('/api/logout', {}); location.href = '/login'; });
  document.querySelectorAll('.simbtn').forEach((b) => b.addEventListener('click', () => {
    const data = JSON.parse(b.dataset.sim);
    if (data.credential) data.credential.key += '-' + Date.now();
    post('/sim', data);
  }));
})();
