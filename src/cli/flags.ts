// Flag value parsers more than one command uses, so each reads alike everywhere.

/** An unsigned 32-bit integer in decimal or, with 0x, hexadecimal (how RPC program numbers are usually written). */
export function parseUint32(text: string): number {
  const t = text.trim();
  const n = /^0x[0-9a-f]{1,8}$/i.test(t) ? Number.parseInt(t.slice(2), 16) : /^[0-9]{1,10}$/.test(t) ? Number(t) : NaN;
  if (!(n >= 0 && n <= 0xffffffff))
    throw new Error(`${text} is not a number from 0 to 4294967295 (decimal, or hexadecimal with 0x)`);
  return n;
}
