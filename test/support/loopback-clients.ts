// DSTM clients and binding feeds calling `dstm server` processes on [::1] (see test/server/helpers.ts), with the
// defaults every such test uses, and the event wait they share.
import type { EventEmitter } from 'node:events';
import { DEFAULT_PROGRAM } from '../../src/config/server-schema';
import { BindingFeed, type BindingFeedOptions } from '../../src/protocol/binding-feed';
import { DstmClient, type ClientOptions } from '../../src/protocol/client';

/** The next `event` (events.once would reject on the informational 'error' events of feeds and keepers). */
export function nextEvent<T>(e: EventEmitter, event: string): Promise<T> {
  return new Promise((resolve) => e.once(event, resolve));
}

/** A node calling the server on [::1]:`port` from `local`. */
export function nodeOn(port: number, local: string, o: Partial<ClientOptions> = {}): Promise<DstmClient> {
  return DstmClient.connect({ host: '::1', port, program: DEFAULT_PROGRAM, local, ...o });
}

/** A TEP's binding feed following the servers on [::1] at `ports`, in order. */
export function feedOn(ports: number[], o: Partial<BindingFeedOptions> = {}): BindingFeed {
  return new BindingFeed({ servers: ports.map((port) => ({ host: '::1', port })), program: DEFAULT_PROGRAM, ...o });
}
