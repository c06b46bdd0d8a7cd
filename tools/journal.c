/* journal.c - see journal.h. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"

static int is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	return js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && !fstat(STDERR_FILENO, &st) &&
	       (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static pthread_once_t journal_once = PTHREAD_ONCE_INIT;
static int journal_answer;

static void ask_journal(void)
{
	journal_answer = is_journal();
}

/* Asked once: stderr does not change under a running rmig. */
int journal_stderr(void)
{
	pthread_once(&journal_once, ask_journal);
	return journal_answer;
}

void journal_line(int prio, const char *fmt, ...)
{
	char line[2048];
	int n = journal_stderr() ? snprintf(line, sizeof(line), "<%d>", prio) : 0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	/* One line per message, whatever a peer or a file put in its text:
	 * control characters inside it (not the final newline) become '?'. */
	for (char *c = line; *c; c++)
		if (((unsigned char)*c < 0x20 && !(*c == '\n' && !c[1])) || *c == 0x7f)
			*c = '?';
	fputs(line, stderr);
}
