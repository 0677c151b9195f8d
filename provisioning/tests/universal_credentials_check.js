// Runs the broker's own container-registry credentials plugin on every connection the real broker
// client loaded in universal mode (its config.universal.json), as its connection start-up does.
// Usage: node universal_credentials_check.js BROKER_HOME CONFIG_UNIVERSAL_JSON
const fs = require('fs');
const path = require('path');
const [home, configFile] = process.argv.slice(2);
const pluginPath = 'snyk-broker/dist/lib/hybrid-sdk/client/brokerClientPlugins/plugins/containerRegistryCredentialsFormatting.js';
const { Plugin } = require(path.join(home, 'node_modules', pluginPath));
const connections = JSON.parse(fs.readFileSync(configFile)).CONNECTIONS || {};
let failed = false;
for (const [name, config] of Object.entries(connections)) {
  try {
    const parsed = JSON.parse(new Plugin({})._getCredentials(config));
    console.log(`${name}: passing ${JSON.stringify(parsed)}`);
  } catch (e) {
    console.log(`${name}: error ${e.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
