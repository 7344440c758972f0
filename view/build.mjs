// Builds the built-in view into dist/view/index.html: the page's TypeScript (and d3-force) bundled
// and minified by esbuild, the stylesheet minified, both inlined into page.html, so that the
// exporter serves one file and the browser fetches nothing else. The licences of the bundled
// packages go into the page as a comment. Run by `npm run build` (and so by `npm ci`'s prepare).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const out = join(root, 'dist/view/index.html');

const script = await build({
  entryPoints: [join(here, 'main.ts')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  platform: 'browser',
  write: false,
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning',
});
const style = await build({
  entryPoints: [join(here, 'style.css')],
  bundle: true,
  minify: true,
  write: false,
  logLevel: 'warning',
});

// One notice per distinct licence text, naming the packages it covers.
const licences = new Map();
for (const input of Object.keys(script.metafile.inputs)) {
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (!m) continue;
  const dir = join(root, 'node_modules', m[1]);
  const { name, version } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const text = readFileSync(join(dir, 'LICENSE'), 'utf8').trim();
  const names = licences.get(text) ?? new Set();
  names.add(`${name}@${version}`);
  licences.set(text, names);
}
const notices = [...licences]
  .map(([text, names]) => `<!-- ${[...names].sort().join(', ')}:\n${text.replaceAll('--', '- -')}\n-->`)
  .join('\n');

const js = script.outputFiles[0].text.trim();
const css = style.outputFiles[0].text.trim();
if (/<\/script/i.test(js) || /<\/style/i.test(css)) throw new Error('view: the bundle holds a closing tag');
const html = readFileSync(join(here, 'page.html'), 'utf8')
  .replace('/*STYLE*/', () => css)
  .replace('/*SCRIPT*/', () => js)
  .replace('<!--LICENSES-->', () => notices);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, html);
