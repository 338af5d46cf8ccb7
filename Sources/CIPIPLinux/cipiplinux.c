#define _GNU_SOURCE 1
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/if_tun.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include "cipiplinux.h"

_Static_assert(sizeof(cipl_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr size");
_Static_assert(offsetof(cipl_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "mmsghdr layout");

unsigned long cipl_tunsetiff(void) { return TUNSETIFF; }

int cipl_recvmmsg(int fd, cipl_mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout) {
    return recvmmsg(fd, (struct mmsghdr *)vec, vlen, flags, timeout);
}

int cipl_sendmmsg(int fd, cipl_mmsghdr *vec, unsigned int vlen, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)vec, vlen, flags);
}

int cipl_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int cipl_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

static int cipl_ethtool(const char *name, struct ethtool_value *ev) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_data = (void *)ev;
    int r = ioctl(fd, SIOCETHTOOL, &ifr);
    int saved = errno;
    close(fd);
    errno = saved;
    return r < 0 ? -1 : 0;
}

int cipl_ethtool_get(const char *name, uint32_t cmd, uint32_t *value) {
    struct ethtool_value ev = { .cmd = cmd, .data = 0 };
    if (cipl_ethtool(name, &ev) < 0) return -1;
    *value = ev.data;
    return 0;
}

int cipl_ethtool_set(const char *name, uint32_t cmd, uint32_t value) {
    struct ethtool_value ev = { .cmd = cmd, .data = value };
    return cipl_ethtool(name, &ev);
}

uint32_t cipl_ethtool_ggro(void) { return ETHTOOL_GGRO; }
uint32_t cipl_ethtool_sgro(void) { return ETHTOOL_SGRO; }
uint32_t cipl_ethtool_gflags(void) { return ETHTOOL_GFLAGS; }
uint32_t cipl_ethtool_sflags(void) { return ETHTOOL_SFLAGS; }
uint32_t cipl_eth_flag_lro(void) { return ETH_FLAG_LRO; }
