// A logger whose JSON lines a test reads back, one record per line, as they are written.
import { Writable } from 'node:stream';
import { createLogger, type Level, type Logger } from '../../src/lib/log';

export function captureLog(level: Level = 'info'): { log: Logger; records: Record<string, unknown>[] } {
  const records: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n'))
        if (line) records.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  // never the journal's stream, whatever JOURNAL_STREAM says: plain JSON lines
  return { log: createLogger({ level, stream, json: true, journal: false }), records };
}
