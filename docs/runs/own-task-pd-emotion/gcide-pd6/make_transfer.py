"""32,000 lines of the GNU dictionary's definitions (../shared/data/text), seeded sample, 5-60 words, tabs removed:
general English unlabelled text for emotion's transfer set (no in-domain unlabelled text is available offline)."""
import gzip, random, sys
lines = [l.strip().replace("\t", " ") for l in gzip.open(sys.argv[1], "rt", encoding="utf-8")]
lines = [l for l in lines if 5 <= len(l.split()) <= 60]
random.Random(0).shuffle(lines)
open(sys.argv[2], "w", encoding="utf-8").write("\n".join(lines[:32000]) + "\n")
print(len(lines), "eligible;", min(32000, len(lines)), "written")
