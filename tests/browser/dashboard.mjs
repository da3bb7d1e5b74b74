// The office dashboard in a real browser: the gate that missed its report is flagged 漏报 in red, the late one 迟报,
// the community tier is shown; a screenshot is saved.
// Usage: node dashboard.mjs <url> <missing-gate-name> <late-gate-name> <screenshot.png>
import { launch, fail } from './lib.mjs';

const [url, missingGate, lateGate, shot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  await page.goto(url);
  const row = (name) => page.locator('#gates tr', { hasText: name });
  const missing = row(missingGate).locator('td.missing');
  if ((await missing.count()) < 1) fail(`no 漏报 cell in ${missingGate}'s row`);
  if ((await missing.first().innerText()).trim() !== '漏报') fail('the missing cell does not say 漏报');
  const colour = await missing.first().evaluate((e) => getComputedStyle(e).backgroundColor);
  if (colour !== 'rgb(255, 221, 221)') fail(`the 漏报 cell is not highlighted (background ${colour})`);
  if ((await row(lateGate).locator('td.late').count()) < 1) fail(`no 迟报 cell in ${lateGate}'s row`);
  if ((await page.locator('#communities td.tier-high').count()) < 1) fail('no community shown at 高风险');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`ok: ${shot}`);
} finally {
  await browser.close();
}
