/**
 * Commands as the docs print them, so a test can run exactly what a reader would copy: the
 * shell blocks of a Markdown file, their continuation lines joined, and one command split
 * into its arguments the way a POSIX shell splits single- and double-quoted words.
 */
import { readFileSync } from 'node:fs';

/** Every command line in the ```sh blocks of `markdownFile` (continuations joined, comments dropped). */
export function shellCommandsIn(markdownFile: string): string[] {
  const text = readFileSync(markdownFile, 'utf8');
  const commands: string[] = [];
  for (const block of text.matchAll(/^```(?:sh|bash|shell)\n([\s\S]*?)^```/gm)) {
    const joined = (block[1] ?? '').replace(/\\\n\s*/g, '');
    for (const line of joined.split('\n')) {
      const command = line.trim();
      if (command !== '' && !command.startsWith('#')) commands.push(command);
    }
  }
  return commands;
}

/** The one command in `markdownFile` that starts with `prefix`; throws when there is none or more than one. */
export function documentedCommand(markdownFile: string, prefix: string): string[] {
  const found = shellCommandsIn(markdownFile).filter((c) => c.startsWith(prefix));
  if (found.length !== 1) throw new Error(`${markdownFile}: expected one command starting with "${prefix}", found ${found.length}`);
  return shellWords(found[0] ?? '');
}

/** Splits a command line into words: whitespace separates, '…' is literal, "…" allows \" and \\. */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated ' in: ${line}`);
      word = (word ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      let text = '';
      for (i++; i < line.length && line[i] !== '"'; i++) {
        const escaped = line[i] === '\\' && (line[i + 1] === '"' || line[i + 1] === '\\');
        text += line.charAt(escaped ? ++i : i);
      }
      if (i >= line.length) throw new Error(`unterminated " in: ${line}`);
      word = (word ?? '') + text;
    } else if (c === '\\' && i + 1 < line.length) {
      word = (word ?? '') + line.charAt(++i);
    } else if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else {
      word = (word ?? '') + c;
    }
  }
  if (word !== undefined) words.push(word);
  return words;
}
