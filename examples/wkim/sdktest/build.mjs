// Bundles the official WuKongIM JS SDK for Node. The package's lib/ uses
// ESM syntax with extensionless relative imports and no "type":"module",
// so Node cannot import it as it is; esbuild resolves the imports into one
// ES module, sdk.bundle.mjs, whose default export is WKSDK.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';

export const bundlePath = fileURLToPath(new URL('./sdk.bundle.mjs', import.meta.url));

export async function bundleSDK() {
  await build({
    entryPoints: [fileURLToPath(new URL('./node_modules/wukongimjssdk/lib/index.js', import.meta.url))],
    bundle: true,
    format: 'esm',
    platform: 'node',
    outfile: bundlePath,
    logLevel: 'warning',
  });
  return bundlePath;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await bundleSDK();
  console.log('wrote', bundlePath);
}
