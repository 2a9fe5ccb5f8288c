// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
/*
 * Kernel side of the reference tracer's real events.
 *
 * Why this file exists: the conformance suite needs a tracer that really
 * loads eBPF programs (so that the capability rings are exercised against
 * the kernel, not a mock). These programs are deliberately small and
 * portable: they use only UAPI headers and hand-written stable layouts
 * (x86_64 `struct pt_regs`, the sched_process_exec tracepoint record), no
 * CO-RE and no vmlinux.h, so the objects load on kernels 5.4 .. 7.x without
 * BTF from the build host.
 *
 * Every event starts with `struct event_header`; the `kind` field tells the
 * user space decoder (reference/src/ebpf.rs) which layout follows. Keep the
 * two files in sync: all fields are little-endian and naturally aligned.
 *
 * build.rs compiles this file four times, one object per combination of two
 * kernel features; ebpf.rs loads the one that matches what it probed:
 *
 *   CAPRING_PERF_OUTPUT     events leave through a BPF_MAP_TYPE_PERF_EVENT_ARRAY
 *                           (bpf_perf_event_output) instead of a ring buffer
 *                           (BPF_MAP_TYPE_RINGBUF, Linux 5.8+).
 *   CAPRING_LEGACY_READ     memory is read with bpf_probe_read[_str] instead of
 *                           bpf_probe_read_{kernel,user}[_str] (Linux 5.5+).
 *
 * A map of a type the kernel does not know makes the whole object fail to
 * load, and an unknown helper fails verification: hence objects, not runtime
 * branches.
 *
 * The license string must be GPL-compatible because bpf_probe_read_* are
 * GPL-only helpers.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* ---- event layouts shared with user space ------------------------------ */

#define KIND_EXECVE 1
#define KIND_OPENAT 2
#define KIND_MODULE_LOAD 3
#define KIND_SCHED_PROCESS_EXEC 4
#define KIND_NET_PACKET 5

#define ENOSPC 28

#define COMM_LEN 16
#define PATH_LEN 256

struct event_header {
	__u32 kind;
	__u32 pid; /* thread group id (what user space calls a pid) */
	__u32 tid;
	__u32 uid;
	__u64 ts_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	char comm[COMM_LEN];
}; /* 40 bytes */

struct execve_event {
	struct event_header h;
	__u32 syscall_nr;
	__u32 reserved;
	char filename[PATH_LEN];
};

struct openat_event {
	struct event_header h;
	__u32 syscall_nr;
	__u32 reserved;
	__u64 flags;
	char path[PATH_LEN];
};

struct module_load_event {
	struct event_header h;
	__u32 syscall_nr;
	__u32 reserved;
};

struct sched_process_exec_event {
	struct event_header h; /* h.pid is the tracepoint's `pid` field */
	__u32 old_pid;
	__u32 reserved;
	char filename[PATH_LEN];
};

#define DIRECTION_INGRESS 1
#define DIRECTION_EGRESS 2

struct net_packet_event {
	struct event_header h; /* only kind and ts_ns are meaningful */
	__u32 direction;
	__u32 length;
	__u32 ifindex;
	__u16 l3_protocol; /* EtherType in host byte order: 0x0800 IPv4, 0x86dd IPv6 */
	__u8 ip_protocol;  /* IANA number (6 tcp, 17 udp, ...), 0 if unknown */
	__u8 has_ports;    /* 1 if src_port/dst_port were read from a TCP/UDP header */
	__u16 src_port;    /* host byte order */
	__u16 dst_port;
	__u32 reserved;
};

/* ---- maps and globals ---------------------------------------------------- */

#ifdef CAPRING_PERF_OUTPUT
/* One perf buffer per CPU; max_entries 0 = the number of CPUs (set by aya). */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} EVENTS SEC(".maps");

/* The tracing events are larger than is comfortable on the 512-byte BPF stack:
 * they are assembled here, then copied out by bpf_perf_event_output. Only
 * tracing programs (sys_enter, sched_process_exec) use it; they run with
 * preemption disabled and never in interrupt context, so one slot per CPU
 * cannot be overwritten halfway. Packets (which may arrive in softirq context
 * on top of a tracing program) use the stack instead. */
union any_event {
	struct execve_event execve;
	struct openat_event openat;
	struct module_load_event module_load;
	struct sched_process_exec_event sched_process_exec;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, union any_event);
} SCRATCH SEC(".maps");
#else
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 512 * 1024);
} EVENTS SEC(".maps");
#endif

/* Number of events lost because the ring (or perf) buffer was full (index 0). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} LOST SEC(".maps");

/* Set by the loader: the tracer's own process, never reported. */
const volatile __u32 self_tgid = 0;

/*
 * Field offsets inside the sched_process_exec record. The defaults are the
 * layout of every kernel from 5.10 to 6.18; the loader overrides them from
 * tracefs' `format` file when that file can be read.
 */
const volatile __u32 exec_filename_loc_offset = 8;
const volatile __u32 exec_pid_offset = 12;
const volatile __u32 exec_old_pid_offset = 16;

/* ---- x86_64 syscall numbers and struct pt_regs offsets ------------------ */

#define NR_OPENAT 257
#define NR_OPENAT2 437
#define NR_EXECVE 59
#define NR_EXECVEAT 322
#define NR_INIT_MODULE 175
#define NR_DELETE_MODULE 176
#define NR_FINIT_MODULE 313

/* struct pt_regs on x86_64: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di ... */
#define PT_REGS_DI_OFFSET (14 * 8)
#define PT_REGS_SI_OFFSET (13 * 8)
#define PT_REGS_DX_OFFSET (12 * 8)

/* ---- helpers ------------------------------------------------------------- */

static __always_inline void count_lost(void)
{
	__u32 key = 0;
	__u64 *lost = bpf_map_lookup_elem(&LOST, &key);

	if (lost)
		__sync_fetch_and_add(lost, 1);
}

#ifdef CAPRING_LEGACY_READ
#define read_kernel bpf_probe_read
#define read_kernel_str bpf_probe_read_str
#define read_user bpf_probe_read
#define read_user_str bpf_probe_read_str
#else
#define read_kernel bpf_probe_read_kernel
#define read_kernel_str bpf_probe_read_kernel_str
#define read_user bpf_probe_read_user
#define read_user_str bpf_probe_read_user_str
#endif

/* Space for one tracing event of `size` bytes, or NULL (counted as lost). */
static __always_inline void *reserve_event(__u64 size)
{
#ifdef CAPRING_PERF_OUTPUT
	__u32 key = 0;
	void *e = bpf_map_lookup_elem(&SCRATCH, &key);
#else
	void *e = bpf_ringbuf_reserve(&EVENTS, size, 0);
#endif

	if (!e)
		count_lost();
	return e;
}

/* Hands a reserved event of `size` bytes to user space. */
static __always_inline void submit_event(void *ctx, void *e, __u64 size)
{
#ifdef CAPRING_PERF_OUTPUT
	long err = bpf_perf_event_output(ctx, &EVENTS, BPF_F_CURRENT_CPU, e, size);

	/* A full perf buffer is counted by the kernel (PERF_RECORD_LOST), not here. */
	if (err < 0 && err != -ENOSPC)
		count_lost();
#else
	bpf_ringbuf_submit(e, 0);
#endif
}

/* Returns 1 if the current task belongs to the tracer itself. */
static __always_inline int is_self(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	return self_tgid != 0 && tgid == self_tgid;
}

static __always_inline void fill_header(struct event_header *h, __u32 kind)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	h->kind = kind;
	h->pid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->uid = (__u32)bpf_get_current_uid_gid();
	h->ts_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* Raw sys_enter arguments are (struct pt_regs *regs, long id). */
static __always_inline long raw_syscall_nr(void *ctx)
{
	return (long)((__u64 *)ctx)[1];
}

static __always_inline __u64 raw_syscall_reg(void *ctx, __u32 offset)
{
	__u64 value = 0;
	void *regs = (void *)((__u64 *)ctx)[0];

	read_kernel(&value, sizeof(value), regs + offset);
	return value;
}

/* ---- raw_tracepoint/sys_enter: execve, execveat -------------------------- */

SEC("raw_tracepoint/sys_enter")
int execve_enter(void *ctx)
{
	long nr = raw_syscall_nr(ctx);
	__u64 path_ptr;
	struct execve_event *e;

	if (nr != NR_EXECVE && nr != NR_EXECVEAT)
		return 0;
	if (is_self())
		return 0;
	/* execve(filename, ...) / execveat(dirfd, filename, ...) */
	path_ptr = raw_syscall_reg(ctx, nr == NR_EXECVE ? PT_REGS_DI_OFFSET : PT_REGS_SI_OFFSET);

	e = reserve_event(sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->h, KIND_EXECVE);
	e->syscall_nr = nr;
	e->reserved = 0;
	if (read_user_str(e->filename, sizeof(e->filename), (void *)path_ptr) < 0)
		e->filename[0] = 0;
	submit_event(ctx, e, sizeof(*e));
	return 0;
}

/* ---- raw_tracepoint/sys_enter: openat, openat2 --------------------------- */

SEC("raw_tracepoint/sys_enter")
int openat_enter(void *ctx)
{
	long nr = raw_syscall_nr(ctx);
	__u64 path_ptr, third;
	__u64 flags = 0;
	struct openat_event *e;

	if (nr != NR_OPENAT && nr != NR_OPENAT2)
		return 0;
	if (is_self())
		return 0;
	/* openat(dirfd, path, flags, mode) / openat2(dirfd, path, struct open_how *how, size) */
	path_ptr = raw_syscall_reg(ctx, PT_REGS_SI_OFFSET);
	third = raw_syscall_reg(ctx, PT_REGS_DX_OFFSET);
	if (nr == NR_OPENAT)
		flags = third;
	else if (read_user(&flags, sizeof(flags), (void *)third) < 0)
		flags = 0; /* open_how.flags is the first __u64 */

	e = reserve_event(sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->h, KIND_OPENAT);
	e->syscall_nr = nr;
	e->reserved = 0;
	e->flags = flags;
	if (read_user_str(e->path, sizeof(e->path), (void *)path_ptr) < 0)
		e->path[0] = 0;
	submit_event(ctx, e, sizeof(*e));
	return 0;
}

/* ---- raw_tracepoint/sys_enter: init_module, finit_module, delete_module -- */

SEC("raw_tracepoint/sys_enter")
int module_load_enter(void *ctx)
{
	long nr = raw_syscall_nr(ctx);
	struct module_load_event *e;

	if (nr != NR_INIT_MODULE && nr != NR_FINIT_MODULE && nr != NR_DELETE_MODULE)
		return 0;
	if (is_self())
		return 0;

	e = reserve_event(sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->h, KIND_MODULE_LOAD);
	e->syscall_nr = nr;
	e->reserved = 0;
	submit_event(ctx, e, sizeof(*e));
	return 0;
}

/* ---- tracepoint/sched/sched_process_exec --------------------------------- */

SEC("tracepoint/sched/sched_process_exec")
int sched_process_exec(void *ctx)
{
	struct sched_process_exec_event *e;
	__u32 data_loc = 0, pid = 0, old_pid = 0;
	__u32 offset;

	if (is_self())
		return 0;
	read_kernel(&data_loc, sizeof(data_loc), ctx + exec_filename_loc_offset);
	read_kernel(&pid, sizeof(pid), ctx + exec_pid_offset);
	read_kernel(&old_pid, sizeof(old_pid), ctx + exec_old_pid_offset);

	e = reserve_event(sizeof(*e));
	if (!e)
		return 0;
	fill_header(&e->h, KIND_SCHED_PROCESS_EXEC);
	e->h.pid = pid;
	e->old_pid = old_pid;
	e->reserved = 0;
	/* __data_loc: low 16 bits = offset from the record start, high 16 = length */
	offset = data_loc & 0xffff;
	if (read_kernel_str(e->filename, sizeof(e->filename), ctx + offset) < 0)
		e->filename[0] = 0;
	submit_event(ctx, e, sizeof(*e));
	return 0;
}

/* ---- cgroup_skb ingress / egress ----------------------------------------- */

#define ETH_P_IPV4 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP_NR 6
#define IPPROTO_UDP_NR 17

static __always_inline void report_packet(struct __sk_buff *skb, __u32 direction)
{
#ifdef CAPRING_PERF_OUTPUT
	struct net_packet_event on_stack;
	struct net_packet_event *e = &on_stack;
#else
	struct net_packet_event *e;
#endif
	__u16 l3 = bpf_ntohs((__u16)skb->protocol);
	__u8 ip_protocol = 0;
	__u32 l4_offset = 0;
	__u16 ports[2];

	/* cgroup_skb sees the packet from the network header on. */
	if (l3 == ETH_P_IPV4) {
		__u8 vihl = 0;

		if (bpf_skb_load_bytes(skb, 0, &vihl, 1) == 0 &&
		    bpf_skb_load_bytes(skb, 9, &ip_protocol, 1) == 0)
			l4_offset = (vihl & 0x0f) * 4;
	} else if (l3 == ETH_P_IPV6) {
		if (bpf_skb_load_bytes(skb, 6, &ip_protocol, 1) == 0)
			l4_offset = 40; /* extension headers are not followed */
	}

#ifndef CAPRING_PERF_OUTPUT
	e = bpf_ringbuf_reserve(&EVENTS, sizeof(*e), 0);
	if (!e) {
		count_lost();
		return;
	}
#endif
	__builtin_memset(e, 0, sizeof(*e));
	e->h.kind = KIND_NET_PACKET;
	e->h.ts_ns = bpf_ktime_get_ns();
	e->direction = direction;
	e->length = skb->len;
	e->ifindex = skb->ifindex;
	e->l3_protocol = l3;
	e->ip_protocol = ip_protocol;
	if ((ip_protocol == IPPROTO_TCP_NR || ip_protocol == IPPROTO_UDP_NR) && l4_offset >= 20 &&
	    bpf_skb_load_bytes(skb, l4_offset, ports, sizeof(ports)) == 0) {
		e->has_ports = 1;
		e->src_port = bpf_ntohs(ports[0]);
		e->dst_port = bpf_ntohs(ports[1]);
	}
	submit_event(skb, e, sizeof(*e));
}

/* Both programs return 1: the packet is always allowed through. */
SEC("cgroup_skb/ingress")
int net_ingress(struct __sk_buff *skb)
{
	report_packet(skb, DIRECTION_INGRESS);
	return 1;
}

SEC("cgroup_skb/egress")
int net_egress(struct __sk_buff *skb)
{
	report_packet(skb, DIRECTION_EGRESS);
	return 1;
}
