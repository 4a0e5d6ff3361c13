/* classes.c - embeds convert/imagenet_classes.txt (the 1000 ImageNet-1k names in index order, as
   torchvision's _IMAGENET_CATEGORIES) as a NUL-terminated string. The assembler reads the file at
   build time, relative to the repository root, where make runs. */
#include "convert/convert.h"

__asm__(".section .rodata\n"
        ".global dit_imagenet_classes_txt\n"
        ".type dit_imagenet_classes_txt, @object\n"
        "dit_imagenet_classes_txt:\n"
        ".incbin \"convert/imagenet_classes.txt\"\n"
        ".byte 0\n"
        ".size dit_imagenet_classes_txt, . - dit_imagenet_classes_txt\n"
        ".previous\n");
