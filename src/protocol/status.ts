// The one mapping between the DSTM program's enums (dstm_status, dstm_state in xdr/dstm.x, generated into
// ./generated/dstm) and the names every other part uses (logs, metrics labels, --json, the store, the CLI's choices):
// the enum member's name without DSTM_, in lower case. A member added to the .x file gets its name here by itself.
import { dstm_state, dstm_status } from './generated/dstm';

type NameOf<K> = K extends `DSTM_${infer R}` ? Lowercase<R> : never;

/** 'ok', 'no_address', 'not_allowed', …: the names of dstm_status. */
export type StatusName = NameOf<keyof typeof dstm_status>;
/** A status other than ok: why a call was refused. */
export type Refusal = Exclude<StatusName, 'ok'>;
/** 'active', 'held', 'revoked': the names of dstm_state. */
export type StateName = NameOf<keyof typeof dstm_state>;

function byName<E extends Record<string, number>>(e: E): { [K in keyof E as NameOf<K>]: E[K] } {
  return Object.freeze(
    Object.fromEntries(Object.entries(e).map(([k, v]) => [k.replace(/^DSTM_/, '').toLowerCase(), v])),
  ) as never;
}

/** dstm_status by name: STATUS.no_address === dstm_status.DSTM_NO_ADDRESS. */
export const STATUS = byName(dstm_status) as { readonly [K in StatusName]: dstm_status };
/** dstm_state by name: STATE.held === dstm_state.DSTM_HELD. */
export const STATE = byName(dstm_state) as { readonly [K in StateName]: dstm_state };

const namesOf = <N extends string>(e: Readonly<Record<N, number>>): ReadonlyMap<number, N> =>
  new Map(Object.entries(e).map(([k, v]) => [v as number, k as N]));
const STATUS_BY_VALUE = namesOf<StatusName>(STATUS);
const STATE_BY_VALUE = namesOf<StateName>(STATE);

/** Every status name, in the enum's order. */
export const STATUS_NAMES: readonly StatusName[] = [...STATUS_BY_VALUE.values()];
/** Every state name, in the enum's order (the choices of `dstm leases --state`). */
export const STATE_NAMES: readonly StateName[] = [...STATE_BY_VALUE.values()];

/** The name of a status received on the wire; a value this build does not know reads as bad_request. */
export function statusName(v: number): StatusName {
  return STATUS_BY_VALUE.get(v) ?? 'bad_request';
}

/** The name of a binding state; throws on a value outside dstm_state (a store or peer this build cannot read). */
export function stateName(v: number): StateName {
  const n = STATE_BY_VALUE.get(v);
  if (n === undefined) throw new RangeError(`unknown binding state ${v}`);
  return n;
}
