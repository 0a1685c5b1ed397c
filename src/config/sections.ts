// Every section of the configuration file with its keys' declarations, for what covers them all (the man pages).
import type { SECTIONS } from './load';
import type { Fields } from './schema';
import { clientFields } from './client-schema';
import { serverFields } from './server-schema';
import { staticFields } from './static-schema';
import { tepFields } from './tep-schema';

export const CONFIG_SECTIONS: Readonly<Record<(typeof SECTIONS)[number], Fields>> = {
  server: serverFields,
  client: clientFields,
  tep: tepFields,
  static: staticFields,
};
