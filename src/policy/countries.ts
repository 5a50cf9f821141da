import countries from 'i18n-iso-countries';

const ALPHA2 = new Set(Object.keys(countries.getAlpha2Codes()).map((c) => c.toLowerCase()));

/** Codes people use that ISO 3166-1 does not assign (or assigns to something else). */
const COMMON_MISTAKES: Record<string, string> = { uk: 'gb', en: 'gb', el: 'gr' };

/** Why a country label value is wrong, or undefined when it is a lower-case ISO 3166-1 alpha-2 code. */
export function countryProblem(value: string): string | undefined {
  if (value !== value.toLowerCase()) {
    return ALPHA2.has(value.toLowerCase()) ? `is not lower case (write "${value.toLowerCase()}")` : 'is not an ISO 3166-1 alpha-2 code';
  }
  if (ALPHA2.has(value)) return undefined;
  const hint = COMMON_MISTAKES[value];
  return hint !== undefined ? `is not an ISO 3166-1 alpha-2 code (did you mean "${hint}"?)` : 'is not an ISO 3166-1 alpha-2 code';
}
