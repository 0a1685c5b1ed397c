import { Args, Flags } from '@oclif/core';
import { classify, leaseFilter } from '../cli/client';
import { leaseJson } from '../protocol/binding-json';
import { clientFlags, connectFromFlags } from '../cli/client-flags';
import { configFlag } from '../cli/setting-flags';
import type { LeaseRow } from '../protocol/client';
import type { FailoverClient } from '../protocol/failover';
import { DstmCommand, fail } from '../cli/command';
import { EXIT, exitHelp } from '../cli/exit-codes';
import { formatIPv6, parseIPv4, parseIPv6 } from '../lib/addr';
import { loadServerConfig, policyOf } from '../server/daemon';
import { TepMap } from '../server/leases';
import { SqliteStore } from '../server/sqlite-store';
import { STATE_NAMES } from '../protocol/status';
import { bindingRow } from '../server/lease-io';

const EXITS = [
  EXIT.ok,
  EXIT.internal,
  EXIT.usage,
  EXIT.notAllowed,
  EXIT.noAddress,
  EXIT.noBinding,
  EXIT.unreachable,
  EXIT.serverError,
  EXIT.tls,
];

export default class LeasesCommand extends DstmCommand {
  static override summary = 'List, revoke or pre-allocate DSTM bindings (administration)';
  static override description =
    'list (the default) shows every binding: IPv6 node, IPv4 address, TEP, start, end and state (active, ' +
    'held: expired but kept for its node until the hold time ends, revoked: quarantined); with NODE (an ' +
    'IPv6 address or prefix), --address (an IPv4 address or prefix) or --state, only the bindings that ' +
    'match all of them. It asks the running server (admin procedure LIST, allowed from ' +
    'server.admin_allow, default ::1) or, with --state-dir, reads the store directly (read-only, works ' +
    'with the server stopped or running).' +
    '\n\n' +
    "revoke IPV6 ends that node's binding now; its address is quarantined for the hold time and the node " +
    'must request again. allocate IPV6 binds a node that has not asked (draft section 6 MAY), to ' +
    '--address or any free address. revoke and allocate always go through the running server, which is ' +
    'the only writer of its store. dstm leases export and dstm leases import (backup, migration between ' +
    'stores) work on the store directly: see their --help.' +
    '\n\n' +
    '--json prints list as an array of bindings {ipv4, ipv6, tep4, tep6, starts, ends, state}, revoke and ' +
    'allocate as one object {action, ipv4, ipv6, tep4, tep6, starts, ends, mask, extend, keep}; times in ' +
    'seconds since 1970 UTC (dstm(1), JSON OUTPUT). See dstm-leases(8).' +
    '\n\n' +
    exitHelp(EXITS);

  static exitCodes = EXITS;

  static override examples = [
    '<%= config.bin %> leases',
    '<%= config.bin %> leases --state-dir /var/lib/dstm --json',
    '<%= config.bin %> leases list 2001:db8:42::/48 --state active',
    '<%= config.bin %> leases --address 198.51.100.0/28',
    '<%= config.bin %> leases revoke 2001:db8::42',
    '<%= config.bin %> leases allocate 2001:db8::42 --address 192.0.2.10 --lease 86400',
  ];

  static override args = {
    action: Args.string({
      description: 'list, revoke or allocate',
      options: ['list', 'revoke', 'allocate'],
      default: 'list',
    }),
    node: Args.string({
      description: 'IPv6 address of the node (revoke, allocate); list: only nodes in this IPv6 prefix or address',
    }),
  };

  static override flags = {
    ...clientFlags,
    'state-dir': Flags.string({
      helpValue: 'DIR',
      summary: 'list: read the store in this directory instead of asking the server (not with --server).',
      // the flags of the call it replaces, which it would ignore
      exclusive: ['server', 'program', 'timeout', 'tls', 'tls-ca', 'tls-cert', 'tls-key'],
    }),
    address: Flags.string({
      helpValue: 'IPV4',
      summary:
        'list: only addresses in this IPv4 prefix or address; revoke: only if bound to this IPv4 address; allocate: this IPv4 address (default any free one).',
    }),
    state: Flags.string({
      summary: 'list: only bindings in this state (repeatable).',
      options: [...STATE_NAMES],
      multiple: true,
    }),
    config: configFlag('client', '; with --state-dir also its "server" section, for the TEPs'),
    lease: Flags.integer({
      helpValue: 'SECONDS',
      summary: "allocate: lease length in seconds (default: the configuration's client.lease, else the server's).",
    }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(LeasesCommand);
    let node = '';
    let address = 0;
    let keep: (row: LeaseRow) => boolean = () => true;
    try {
      if (args.action === 'list') {
        keep = leaseFilter({
          node: args.node,
          address: flags.address,
          states: flags.state as LeaseRow['state'][] | undefined,
        });
      } else {
        if (!args.node) throw new Error(`${args.action} needs the IPv6 address of the node`);
        if (flags.state !== undefined) throw new Error('--state only filters a list');
        node = formatIPv6(parseIPv6(args.node));
        if (flags.address !== undefined) address = parseIPv4(flags.address);
      }
      if (flags['state-dir'] !== undefined && args.action !== 'list')
        throw new Error('--state-dir only lists; revoke and allocate go through the server');
    } catch (err) {
      fail(this, (err as Error).message, EXIT.usage, `leases ${args.action}`);
    }
    if (args.action === 'list' && flags['state-dir'] !== undefined) {
      let rows: LeaseRow[];
      try {
        rows = (await listStore(flags['state-dir'], flags.config)).filter(keep);
      } catch (err) {
        fail(this, (err as Error).message, EXIT.usage, 'leases list');
      }
      this.print(rows, flags.json);
      return;
    }
    let client: FailoverClient | undefined;
    try {
      let lease: number;
      ({ client, lease } = await connectFromFlags({ ...flags, transport: 'tcp', protocol: 2, local: undefined }));
      if (args.action === 'list') {
        const rows: LeaseRow[] = [];
        for await (const r of client.list()) if (keep(r)) rows.push(r);
        this.print(rows, flags.json);
      } else {
        const l =
          args.action === 'revoke' ? await client.revoke(node, address) : await client.allocate(node, address, lease);
        this.log(
          flags.json
            ? JSON.stringify({ action: args.action, ...leaseJson(l) })
            : `${args.action === 'revoke' ? 'revoked' : 'allocated'} ${l.address} for ${node}`,
        );
      }
    } catch (err) {
      await client?.close();
      const { code, message } = classify(err);
      fail(this, message, code, `leases ${args.action}`);
    }
    await client.close();
  }

  private print(rows: LeaseRow[], json: boolean): void {
    if (json) {
      this.log(JSON.stringify(rows));
      return;
    }
    const when = (t: number): string => new Date(t * 1000).toISOString().replace('.000Z', 'Z');
    const table = [
      ['IPV6', 'IPV4', 'TEP6', 'TEP4', 'START', 'END', 'STATE'],
      ...rows.map((r) => [r.ipv6, r.ipv4, r.tep6, r.tep4, when(r.starts), when(r.ends), r.state]),
    ];
    const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
    for (const row of table)
      this.log(
        row
          .map((c, i) => c.padEnd(widths[i]))
          .join('  ')
          .trimEnd(),
      );
  }
}

/** Read the bindings straight from a store (read-only); TEPs come from the server configuration. */
async function listStore(dir: string, config?: string): Promise<LeaseRow[]> {
  const teps = new TepMap(policyOf(loadServerConfig({ config, 'state-dir': dir }).config));
  const store = new SqliteStore(dir, { readonly: true });
  try {
    const rows: LeaseRow[] = [];
    for await (const b of store.dump()) rows.push(bindingRow(b, teps));
    return rows;
  } finally {
    await store.close();
  }
}
