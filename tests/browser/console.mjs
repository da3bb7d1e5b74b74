// The operator console end to end in Chromium at 800×480 (the box's touch screen), against the daemon on the demo
// config with its scenario switched off: the simulated camera and thermometer are driven through the console's
// simulator, everything else is what an operator taps. Each step saves a screenshot.
// Usage: node console.mjs <base-url> <screenshot-dir>
import { launch, fail } from './lib.mjs';

const [base, shots] = process.argv.slice(2);
const browser = await launch();
const step = (name) => console.log(`step: ${name}`);
try {
  const context = await browser.newContext({ viewport: { width: 800, height: 480 }, locale: 'zh-CN' });
  const page = await context.newPage();
  const shot = (name) => page.screenshot({ path: `${shots}/${name}.png` });
  const sim = async (data) => {
    const r = await page.request.post(base + '/sim', { data });
    if (!r.ok()) fail(`simulator refused ${JSON.stringify(data)}: ${r.status()}`);
  };
  const panel = page.locator('#panel');
  const expectState = async (state, what) => {
    try {
      await page.waitForSelector(`#panel.state-${state}`, { timeout: 5000 });
    } catch {
      fail(`${what}: the panel is ${await panel.getAttribute('class')} «${await page.locator('#headline').innerText()} ${await page.locator('#message').innerText()}», not ${state}`);
    }
  };
  const text = (sel) => page.locator(sel).innerText();

  step('a request without a session is refused');
  const anon = await page.request.get(base + '/api/status');
  if (anon.status() !== 401) fail(`/api/status without a session gave ${anon.status()}`);
  await page.goto(base + '/');
  if (!page.url().endsWith('/login')) fail('the console did not send a stranger to the login page');

  step('Chinese text renders with real glyphs, not boxes');
  // Drawn in the page's own font stack: 通行 must differ from two private-use code points (which no font has, so
  // they draw as the missing-glyph box). Without a CJK font on the machine both draw the same boxes.
  const tofu = await page.evaluate(() => {
    const draw = (t) => {
      const c = document.createElement('canvas');
      c.width = 120; c.height = 60;
      const g = c.getContext('2d');
      g.font = `40px ${getComputedStyle(document.body).fontFamily}`;
      g.fillText(t, 0, 45);
      return c.toDataURL();
    };
    return draw('通行') === draw('\uE000\uE001');
  });
  if (tofu) fail('the console draws Chinese as boxes: no CJK font (scripts/setup installs fonts-wqy-microhei)');

  step('log in on the keypad');
  for (const k of ['1', '2', '3', '4']) await page.click(`.key[data-key="${k}"]`);
  await shot('00-login');
  await page.click('#login');
  await page.waitForURL(base + '/');
  await page.waitForSelector('#tier.tier-low');

  step('a resident pass is read → green');
  await sim({ credential: { key: 'e2e-pass-1', identity: 'pass', category: 'resident', holder: '王小华' } });
  await sim({ temperature: 36.5 });
  await page.click('#btn-mask');
  await expectState('pass', 'resident');
  if ((await text('#headline')) !== '通行') fail('the green panel does not say 通行');
  if ((await page.locator('#musts li[data-ok="true"]').count()) !== 4) fail('not all four musts ticked');
  if (!(await text('#holder')).includes('王*华')) fail('the name is not shown masked');
  await shot('01-resident-pass');

  step('a fever → amber; re-measure → red with the fever-clinic action');
  await sim({ credential: { key: 'e2e-pass-2', identity: 'pass', category: 'resident', holder: '李四' } });
  await page.click('#btn-mask');
  await sim({ temperature: 38.2 });
  await expectState('refer', 'first fever reading');
  if (!(await page.isVisible('#btn-remeasure'))) fail('no re-measure button after a fever');
  await shot('02-fever-amber');
  await page.click('#btn-remeasure');
  await page.waitForFunction(() => document.getElementById('prompt').textContent.includes('复测'));
  await sim({ temperature: 38.3 });
  await expectState('deny', 'confirmed fever');
  if (!(await text('#actions')).includes('引导至发热门诊')) fail('no fever-clinic action on the red panel');
  await shot('03-fever-red');
  await page.click('#btn-cancel');

  step('registration: bad input gets inline messages and is not sent');
  await page.click('#btn-register');
  const reg = page.locator('#form-register');
  await reg.locator('[name=name]').fill('');
  await reg.locator('[name=phone]').fill('13000000001000000000');
  await reg.locator('[name=destination]').fill('3栋201');
  await reg.locator('[name=id_number]').fill('110105194912310021');
  await reg.locator('button[type=submit]').click();
  await page.waitForSelector('#form-register .error[data-for=phone]:not(:empty)');
  const err = async (f) => reg.locator(`.error[data-for=${f}]`).innerText();
  if (!(await err('phone')).includes('11位')) fail(`phone message: ${await err('phone')}`);
  if (!(await err('name')).includes('姓名')) fail(`name message: ${await err('name')}`);
  if (!(await err('id_number')).includes('校验位')) fail(`ID message: ${await err('id_number')}`);
  await shot('04-registration-errors');

  step('a visitor registered by hand → green');
  await reg.locator('[name=name]').fill('样例访客');
  await reg.locator('[name=phone]').fill('13000000001');
  await reg.locator('[name=id_number]').fill('');
  await reg.locator('[name=reason]').fill('探亲');
  await reg.locator('button[type=submit]').click();
  await page.waitForSelector('#dlg-register', { state: 'hidden' });
  await sim({ temperature: 36.4 });
  await page.click('#btn-mask');
  await expectState('pass', 'registered visitor');
  if (!(await text('#holder')).includes('样**客')) fail('the registered visitor is not shown masked');
  await shot('05-visitor-registered');

  step('a resident without a phone, found by building and room');
  await page.click('#btn-register');
  await page.fill('#roster-building', '3');
  await page.fill('#roster-room', '201');
  await page.click('#roster-find');
  await page.click('#roster-results button >> nth=0');
  await reg.locator('button[type=submit]').click();
  await page.waitForSelector('#dlg-register', { state: 'hidden' });
  await sim({ temperature: 36.6 });
  await page.click('#btn-mask');
  await expectState('pass', 'roster resident');
  await page.click('#btn-cancel');

  step('ID card: a resident on the roster taps her card; the network is down, so the volunteer confirms her status');
  const card = (name, sex, birth, id, to) => ({ card: { name, sex, nation: '01', birth, address: '示范市示范路1号', id, valid_from: '20160101', valid_to: to } });
  await sim(card('赵秀兰', '2', '19460307', '11010119460307002', '长期'));
  await sim({ temperature: 36.4 });
  await page.click('#btn-mask');
  await expectState('refer', 'card tap without the gateway');
  if (!(await text('#holder')).includes('赵*兰')) fail(`the card's name is not shown masked: ${await text('#holder')}`);
  await page.click('#btn-colour');
  await page.click('#dlg-colour [data-colour=green]');
  await expectState('pass', 'card resident');
  await shot('05a-idcard-resident');

  step('ID card: a visitor taps his card; the form already has his name and number, the volunteer adds the rest');
  await sim(card('周建国', '1', '19780512', '11010119780512001', '20380101'));
  await sim({ temperature: 36.6 });
  await page.click('#btn-mask');
  await expectState('refer', 'card visitor before registration');
  if (!(await text('#holder')).includes('周*国')) fail(`the card's name is not shown masked: ${await text('#holder')}`);
  await page.click('#btn-register');
  if (!(await page.isVisible('#card-note'))) fail('the registration form does not say the card was read');
  const note = await text('#card-note');
  if (!note.includes('周*国') || !note.includes('1101**********0018')) fail(`card note: ${note}`);
  if (!(await reg.locator('[name=name]').evaluate((e) => e.readOnly))) fail('the card\'s name can be edited');
  await reg.locator('[name=phone]').fill('');
  await reg.locator('[name=destination]').fill('3栋201');
  await reg.locator('[name=reason]').fill('探望父母');
  await shot('05b-idcard-visitor-form');
  await reg.locator('button[type=submit]').click();
  await page.waitForSelector('#dlg-register', { state: 'hidden' });
  if (await page.isVisible('#card-note')) fail('the card note stayed after the form closed');
  await page.click('#btn-colour');
  await page.click('#dlg-colour [data-colour=green]');
  await expectState('pass', 'card visitor registered');

  step('vehicle: a bad plate is refused inline; two occupants, one red code → vehicle denied');
  await page.click('#btn-vehicle');
  const veh = page.locator('#form-vehicle');
  await veh.locator('[name=plate]').fill('鄂A1234');
  await veh.locator('[name=occupants]').fill('2');
  await veh.locator('button[type=submit]').click();
  await page.waitForSelector('#form-vehicle .error[data-for=plate]:not(:empty)');
  if (!(await veh.locator('.error[data-for=plate]').innerText()).includes('车牌号格式不正确')) fail('no plate message');
  await shot('06-plate-error');
  await veh.locator('[name=plate]').fill('鄂A12345');
  await veh.locator('[name=category]').selectOption('resident');
  await veh.locator('button[type=submit]').click();
  await page.waitForSelector('#vehicle:not([hidden])');
  await sim({ credential: { key: 'e2e-car-1', identity: 'pass', category: 'resident', holder: '赵六' } });
  await sim({ temperature: 36.5 });
  await page.click('#btn-mask');
  await page.waitForFunction(() => document.getElementById('vehicle').textContent.includes('1/2'));
  if ((await text('#headline')) !== '乘员合格') fail(`first occupant shows ${await text('#headline')}`);
  await sim({ credential: { key: 'e2e-car-2', identity: 'health_code', category: 'visitor', code: 'red' } });
  await sim({ temperature: 36.6 });
  await page.click('#btn-mask');
  await page.waitForSelector('#vehicle', { state: 'hidden' });
  await expectState('deny', 'vehicle with a red-code occupant');
  if ((await text('#headline')) !== '禁止') fail(`the vehicle shows ${await text('#headline')}`);
  await shot('07-vehicle-denied');

  step('emergency passage in two taps');
  await page.click('#btn-emergency');
  await page.click('#dlg-emergency [data-kind=ambulance]');
  await expectState('pass', 'emergency');
  try {
    await page.waitForFunction(() => /今日 通行 [1-9]/.test(document.getElementById('today').textContent), null, { timeout: 3000 });
  } catch { fail(`the status strip's counts did not follow: ${await text('#today')}`); }
  if (!(await page.isVisible('#btn-emergency'))) fail('the emergency button is not on screen');
  // Everything on the status strip fits the 800-px screen (nothing cut off at the edge).
  const strip = await page.evaluate(() => { const s = document.getElementById('strip'); return [s.scrollWidth, s.clientWidth, s.textContent]; });
  if (strip[0] > strip[1]) fail(`the status strip overflows at 800 px (${strip[0]} > ${strip[1]}): ${strip[2]}`);
  await shot('08-emergency');

  // The same console on a phone.
  await page.setViewportSize({ width: 390, height: 844 });
  if (!(await page.isVisible('#headline')) || !(await page.isVisible('#btn-emergency'))) fail('phone layout');
  await shot('09-phone');
  await page.setViewportSize({ width: 800, height: 480 });

  const lat = await page.evaluate(() => window.__panelLatencies);
  const sorted = [...lat].sort((a, b) => a - b);
  console.log(`panel latency (decision → shown in the browser): n=${lat.length} median=${sorted[Math.floor(sorted.length / 2)]} ms max=${sorted[sorted.length - 1]} ms`);
  // The goal is 100 ms. The suite runs this test beside others on two cores (PostgreSQL, chaos proxies, fsyncs), so
  // the median must meet it and no update may take more than a second; run alone for the clean figure.
  const median = sorted[Math.floor(sorted.length / 2)];
  if (median > 100) fail(`the median panel update took ${median} ms (> 100 ms)`);
  if (sorted[sorted.length - 1] > 1000) fail(`a panel update took ${sorted[sorted.length - 1]} ms (> 1 s)`);

  step('five wrong PINs lock the console');
  await page.click('#logout');
  await page.waitForURL(base + '/login');
  for (let i = 0; i < 5; i++) {
    await page.fill('#pin', '9999');
    await page.click('#login');
    await page.waitForFunction((n) => document.getElementById('login-error').textContent !== '' , i);
    if (i < 4) await page.evaluate(() => { document.getElementById('login-error').textContent = ''; });
  }
  if (!(await text('#login-error')).includes('已锁定')) fail(`after five wrong PINs: ${await text('#login-error')}`);
  await page.evaluate(() => { document.getElementById('login-error').textContent = ''; });
  await page.fill('#pin', '1234');
  await page.click('#login');
  await page.waitForFunction(() => document.getElementById('login-error').textContent !== '');
  if (!(await text('#login-error')).includes('已锁定')) fail('the right PIN got in while locked');
  await shot('10-locked');
  console.log('ok');
} finally {
  await browser.close();
}
