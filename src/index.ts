// dstm as a library (package.json "main"): each part under its own name, so that the pieces the commands are built
// from can be embedded without the CLI. The commands in src/commands are thin wrappers over exactly these.
export * as rpc from './rpc';
export * as xdr from './rpc/xdr/runtime';
export * as addr from './lib/addr';
export * as packet from './dti/packet';
export { Counters, Drop, Event } from './dti/counters';
export { Tunnel } from './dti/tunnel';
export { TunDevice, RawIpipSocket, Icmp6ErrorSocket } from './dti/device';
export { DstmServer } from './server/daemon';
export { DstmClient, DstmRefusal, type Lease } from './protocol/client';
export { LeaseKeeper } from './node/lease-keeper';
export { BindingFeed } from './protocol/binding-feed';
export { Dti } from './node/dti-node';
export { Tep } from './tep/tep';
export { startTep } from './tep/daemon';
export { createLogger, type Logger } from './lib/log';
export { closeMetrics, Registry, serveMetrics } from './lib/metrics';
export { parseEndpoint, formatEndpoint } from './lib/endpoint';
